//! OAuth 2.0 / OIDC client credentials (SASL/OAUTHBEARER) with the librdkafka we ship: the
//! documented example makes clients, and a client asks the provider's token endpoint for a
//! token by itself. The endpoint is a local HTTP server that records what it is asked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::BaseProducer;

use super::{consumer_config, producer_config, replay_consumer_config};
use crate::config::KafkaConfig;
use crate::config_layers;

const CLIENT_ID: &str = "streamrec";
const CLIENT_SECRET: &str = "s3cret";

/// The example's settings with the secret from the environment, as its header says, and the
/// token endpoint at `url`.
fn oidc_example(url: &str) -> KafkaConfig {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/oidc.toml");
    let env = [
        (
            "STREAMREC__KAFKA__LIBRDKAFKA__SASL_OAUTHBEARER_CLIENT_SECRET",
            CLIENT_SECRET,
        ),
        (
            "STREAMREC__KAFKA__LIBRDKAFKA__SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
            url,
        ),
        // No broker: the token is fetched when a client starts, before any connection.
        ("STREAMREC__KAFKA__BROKERS", "127.0.0.1:1"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    config_layers::load(Some(&example), env, &[]).unwrap().kafka
}

/// A librdkafka built without libcurl refuses `sasl.oauthbearer.method = oidc` when a client
/// is made ("OAuth/OIDC depends on libcurl").
#[test]
fn the_oidc_example_makes_every_client() {
    let kafka = oidc_example("https://login.example.internal/token");
    assert_eq!(kafka.librdkafka["sasl.mechanisms"], "OAUTHBEARER");
    let native = ClientConfig::new().create_native_config().unwrap();
    let features = native.get("builtin.features").unwrap();
    assert!(
        features.split(',').any(|f| f == "oidc"),
        "librdkafka was built without libcurl ({features}): install libcurl's headers \
         (libcurl4-openssl-dev) and rebuild rdkafka-sys"
    );
    let consumer: Result<BaseConsumer, _> = consumer_config(&kafka, "g").create();
    assert!(consumer.is_ok(), "{:?}", consumer.err());
    let replay: Result<BaseConsumer, _> = replay_consumer_config(&kafka, "g.replay").create();
    assert!(replay.is_ok(), "{:?}", replay.err());
    let producer: Result<BaseProducer, _> = producer_config(&kafka).create();
    assert!(producer.is_ok(), "{:?}", producer.err());
}

#[test]
fn a_consumer_fetches_its_token_by_the_client_credentials_grant() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let (requests, received) = channel();
    std::thread::spawn(move || serve_tokens(listener, requests));
    let kafka = oidc_example(&url);
    let consumer: BaseConsumer = consumer_config(&kafka, "g").create().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let request = loop {
        // Served on librdkafka's own threads; polling only keeps the client's queue moving.
        let _ = consumer.poll(Duration::from_millis(50));
        if let Ok(request) = received.try_recv() {
            break request;
        }
        assert!(std::time::Instant::now() < deadline, "no token request");
    };
    let basic = base64(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes());
    assert!(request.starts_with("POST /token "), "{request}");
    let lower = request.to_ascii_lowercase();
    assert!(
        lower.contains(&format!(
            "authorization: basic {}",
            basic.to_ascii_lowercase()
        )),
        "{request}"
    );
    assert!(
        request.contains("grant_type=client_credentials"),
        "{request}"
    );
}

/// Answers every request with a fresh token, sending the request's text to `requests`.
fn serve_tokens(listener: TcpListener, requests: Sender<String>) {
    for stream in listener.incoming().flatten() {
        let Some(request) = read_request(&stream) else {
            continue;
        };
        let _ = requests.send(request);
        let body = format!(
            r#"{{"access_token":"{}","token_type":"bearer","expires_in":3600}}"#,
            unsigned_jwt()
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = (&stream).write_all(answer.as_bytes());
    }
}

/// Head and body of one HTTP/1.1 request.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line.is_empty() || line == "\r\n" {
            break;
        }
        head += &line;
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(str::to_owned)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(head + "\r\n" + &String::from_utf8_lossy(&body))
}

/// A token as a provider issues it: a JWT whose claims librdkafka reads (`sub`, `exp`); it
/// does not check signatures, the brokers do.
fn unsigned_jwt() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = format!(
        r#"{{"sub":"{CLIENT_ID}","iat":{now},"exp":{}}}"#,
        now + 3600
    );
    let header = br#"{"alg":"none","typ":"JWT"}"#;
    format!("{}.{}.sig", base64url(header), base64url(claims.as_bytes()))
}

fn base64url(bytes: &[u8]) -> String {
    let padded = base64(bytes);
    let trimmed = padded.trim_end_matches('=');
    trimmed.replace('+', "-").replace('/', "_")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            let c = if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            };
            out.push(c);
        }
    }
    out
}
