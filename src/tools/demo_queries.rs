//! The demo's queries: once the shop's events are in, a few requests to the query API as a
//! shop's pages would make them, printed with what they returned.

use std::io::{Read, Write};
use std::net::SocketAddr;

use crate::synthetic::ShopperConfig;

/// Asks the running instance's query API and prints the answers.
pub async fn show_queries(address: SocketAddr, shop: &ShopperConfig) {
    let shop = shop.clone();
    let printed = tokio::task::spawn_blocking(move || print_queries(address, &shop)).await;
    if let Err(err) = printed {
        println!("  (the demo's queries failed: {err})");
    }
}

fn print_queries(address: SocketAddr, shop: &ShopperConfig) {
    println!("\nthe query API on {address} (docs/openapi.json), while the pipeline runs:");
    let user = "/v1/users/u0/recommendations?n=5";
    let Some(plain) = show(address, "GET", user, "") else {
        return;
    };
    // The category of u0's first item, as a page of that category would ask.
    let category = plain["items"][0]["item_id"]
        .as_str()
        .and_then(|item| item.strip_prefix('i')?.parse().ok())
        .map(|item| shop.category_of(item));
    if let Some(category) = category {
        show(address, "GET", &format!("{user}&category={category}"), "");
    }
    let items: Vec<&str> = plain["items"]
        .as_array()
        .into_iter()
        .flatten()
        .take(2)
        .filter_map(|i| i["item_id"].as_str())
        .collect();
    let session = serde_json::json!({ "items": items, "n": 5 }).to_string();
    show(address, "POST", "/v1/recommendations", &session);
    if let Some(item) = items.first() {
        show(address, "GET", &format!("/v1/items/{item}/similar?n=5"), "");
    }
    show(address, "GET", "/v1/users/u0/recommendations?n=abc", "");
}

/// Sends one request, prints it and a summary of the answer; returns the answer's JSON.
fn show(address: SocketAddr, method: &str, path: &str, body: &str) -> Option<serde_json::Value> {
    let (status, text) = match call(address, method, path, body) {
        Ok(answer) => answer,
        Err(err) => {
            println!("  {method} {path}: {err}");
            return None;
        }
    };
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let shown = if body.is_empty() {
        String::new()
    } else {
        format!(" {body}")
    };
    println!("  {method} {path}{shown} → {status}");
    let listed = json["items"].as_array().or(json["neighbors"].as_array());
    match listed {
        Some(items) if status == 200 => {
            for item in items {
                let sources = item["sources"].as_array().map(|s| {
                    let names: Vec<&str> = s.iter().filter_map(|v| v.as_str()).collect();
                    format!("  from {}", names.join("+"))
                });
                let (id, score) = (
                    item["item_id"].as_str().unwrap_or("?"),
                    item["score"].as_f64().unwrap_or(0.0),
                );
                println!(
                    "      {id:<8} score {score:.3}{}",
                    sources.unwrap_or_default()
                );
            }
        }
        _ => println!("      {json}"),
    }
    Some(json)
}

/// A plain HTTP/1.1 request: the status and the body.
fn call(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(address)?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}
