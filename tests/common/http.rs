//! A minimal HTTP/1.1 GET for the admin endpoints and Prometheus's API: the status and body.

use std::io::{Read, Write};

/// `GET path` on `address`, with an `Accept` header if given; None when nothing answers.
pub fn get(address: &str, path: &str, accept: Option<&str>) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    Some((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

/// The value of the first series named `name` on `admin`'s `/metrics`; None while it does
/// not answer or before the series exists.
pub fn metric(admin: &str, name: &str) -> Option<u64> {
    let (_, body) = get(admin, "/metrics", None)?;
    let prefix = format!("{name} ");
    let line = body.lines().find(|l| l.starts_with(&prefix))?;
    let value = line.rsplit(' ').next()?.parse::<f64>().ok()?;
    Some(value as u64)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A query string value, percent-encoded.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
