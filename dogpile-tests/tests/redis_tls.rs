//! The `redis` backend over TLS (`rediss://`) against real `redis-server --tls-port`
//! processes, with certificates made for the test by the `openssl` command.

#[macro_use]
mod conformance;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/redis_server.rs"]
mod redis_server;

use dogpile::{make_region, CacheRegion, Error, RegionConfig};
use redis_server::{ClientCerts, RedisServer};

/// A region on the shared TLS server that trusts the test CA.
fn trusting(server: &RedisServer) -> RegionConfig {
    RegionConfig::new("redis")
        .argument("url", server.url())
        .argument("ssl_ca_certs", server.tls_file("ca.crt"))
}

mod conformance_redis_tls {
    use super::*;
    conformance_suite!(
        stores = true,
        config = || trusting(RedisServer::shared_tls())
    );
}

mod conformance_redis_tls_distributed_lock {
    use super::*;
    conformance_suite!(
        stores = true,
        shared_lock = true,
        config = || trusting(RedisServer::shared_tls())
            .argument("distributed_lock", true)
            .argument("lock_sleep", 0.01)
    );
}

fn configured(config: RegionConfig) -> CacheRegion {
    let region = make_region();
    region.configure(config).expect("configure a TLS region");
    region
}

/// The region's first call fails with `Error::Backend` naming the server and saying why.
fn refused(server: &RedisServer, config: RegionConfig, why: &str) {
    let region = configured(config.argument("socket_timeout", "0.5"));
    match region.get::<u8>("k") {
        Err(Error::Backend { backend, source }) => {
            assert!(backend.contains(&server.addr()), "{backend}");
            let text = format!("{source}");
            assert!(text.contains(why), "expected {why:?} in: {text}");
        }
        other => panic!("expected Error::Backend ({why}), got {other:?}"),
    }
}

#[test]
fn the_server_certificate_is_checked_unless_told_otherwise() {
    let server = RedisServer::shared_tls();
    let config = || RegionConfig::new("redis").argument("url", server.url());
    // The system's CAs do not know the test CA; nor does another CA.
    refused(server, config(), "UnknownIssuer");
    refused(
        server,
        config().argument("ssl_ca_certs", server.tls_file("other-ca.crt")),
        "UnknownIssuer",
    );
    // Told not to check, it works (encrypted, unauthenticated): two spellings.
    for insecure in [
        config().argument("ssl_cert_reqs", "none"),
        RegionConfig::new("redis").argument("url", format!("{}/#insecure", server.url())),
    ] {
        let region = configured(insecure);
        region.set("unchecked", &5u8).unwrap();
        assert_eq!(region.get::<u8>("unchecked").unwrap(), Some(5));
    }
    // With the CA, it works too.
    let region = configured(trusting(server));
    region.set("checked", &6u8).unwrap();
    assert_eq!(region.get::<u8>("checked").unwrap(), Some(6));
}

#[test]
fn a_client_certificate_is_presented_when_given() {
    let server = RedisServer::start_tls(ClientCerts::Required);
    refused(&server, trusting(&server), "CertificateRequired");
    let region = configured(
        trusting(&server)
            .argument("ssl_certfile", server.tls_file("client.crt"))
            .argument("ssl_keyfile", server.tls_file("client.key")),
    );
    region.set("with-cert", &7u8).unwrap();
    assert_eq!(region.get::<u8>("with-cert").unwrap(), Some(7));
}

#[test]
fn bad_tls_arguments_are_rejected_naming_the_argument() {
    let server = RedisServer::shared_tls();
    for (config, argument) in [
        (
            trusting(server).argument("ssl_cert_reqs", "sometimes"),
            "ssl_cert_reqs",
        ),
        (
            RegionConfig::new("redis")
                .argument("url", server.url())
                .argument("ssl_ca_certs", "/nonexistent/ca.pem"),
            "ssl_ca_certs",
        ),
        (
            trusting(server).argument("ssl_certfile", server.tls_file("client.crt")),
            "ssl_keyfile",
        ),
        (
            trusting(server)
                .argument("ssl_certfile", server.tls_file("client.crt"))
                .argument("ssl_keyfile", server.tls_file("server.key")),
            "ssl_keyfile",
        ),
        (
            RegionConfig::new("redis")
                .argument("url", "redis://127.0.0.1:1")
                .argument("ssl_ca_certs", server.tls_file("ca.crt")),
            "ssl_ca_certs",
        ),
    ] {
        match make_region().configure(config) {
            Err(Error::InvalidArgument {
                argument: named,
                reason,
                ..
            }) => assert_eq!(named, argument, "{reason}"),
            other => panic!("expected InvalidArgument for {argument}, got {other:?}"),
        }
    }
}

#[test]
fn a_certificate_the_client_does_not_trust_is_named_at_once() {
    // The system's CAs do not know the test server's CA. The handshake fails in a few
    // round trips: the error must say why (the certificate), well before socket_timeout,
    // not that no connection came within it.
    let server = RedisServer::shared_tls();
    let region = configured(
        RegionConfig::new("redis")
            .argument("url", server.url())
            .argument("socket_timeout", "4"),
    );
    let started = std::time::Instant::now();
    let outcome = region.get::<u8>("k");
    let took = started.elapsed();
    let message = match outcome {
        Err(error @ Error::Backend { .. }) => error.to_string(),
        other => panic!("expected Error::Backend, got {other:?}"),
    };
    assert!(message.contains(&server.addr()), "{message}");
    assert!(message.contains("certificate"), "{message}");
    assert!(!message.contains("timed out"), "{message}");
    assert!(
        took < std::time::Duration::from_secs(2),
        "took {took:?}: {message}"
    );
}
