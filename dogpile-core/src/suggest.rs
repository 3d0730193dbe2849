//! "Did you mean": the known name closest to a misspelt one.

/// The candidate closest to `name`, when it is close enough to be what was meant: at most
/// one edit per three characters of `name` (at least one edit), compared without regard
/// to ASCII case. Ties go to the first candidate given.
pub(crate) fn closest<'a, I>(name: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let name = name.to_ascii_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let distance = edit_distance(&name, &candidate.to_ascii_lowercase());
            (distance <= limit).then_some((distance, candidate))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// The Levenshtein distance between `a` and `b`, in characters (one row of the table).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ` (did you mean `{suggestion}`?)`, or nothing.
pub(crate) fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(suggestion) => format!(" (did you mean `{suggestion}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("redis", "redis"), 0);
        assert_eq!(edit_distance("reddis", "redis"), 1);
        assert_eq!(edit_distance("memroy", "memory"), 2);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggests_only_close_names() {
        let known = [
            "memory",
            "memory_serialized",
            "null",
            "redis",
            "redis_cluster",
        ];
        assert_eq!(closest("reddis", known), Some("redis"));
        assert_eq!(closest("Redis", known), Some("redis"));
        assert_eq!(closest("memroy", known), Some("memory"));
        assert_eq!(closest("redis_clustr", known), Some("redis_cluster"));
        assert_eq!(closest("nul", known), Some("null"));
        assert_eq!(closest("postgres", known), None);
        assert_eq!(closest("x", known), None);
        assert_eq!(
            did_you_mean(&Some("redis".into())),
            " (did you mean `redis`?)"
        );
        assert_eq!(did_you_mean(&None), "");
    }
}
