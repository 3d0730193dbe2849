//! dogpile macros (placeholder).
