//! A request's parameters, checked: every error names the parameter and the rule it breaks.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ranking::PriceRange;

/// Why a request is refused (400): which parameter, which rule.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRequest {
    pub parameter: String,
    pub rule: String,
}

fn bad(parameter: &str, rule: impl Into<String>) -> BadRequest {
    BadRequest {
        parameter: parameter.to_owned(),
        rule: rule.into(),
    }
}

/// What a request may ask for.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `n` when a request does not say.
    pub default_n: usize,
    pub max_n: usize,
    pub max_items: usize,
    pub max_id_len: usize,
    pub max_attributes: usize,
    pub max_attribute_len: usize,
}

/// The filters and exclusions every recommendations request may carry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wanted {
    pub n: usize,
    pub category: Option<String>,
    pub price: Option<PriceRange>,
    pub exclude: Vec<String>,
}

/// `GET /v1/users/{user_id}/recommendations`.
#[derive(Clone, Debug, PartialEq)]
pub struct UserAsk {
    pub user_id: String,
    pub wanted: Wanted,
    /// The item on the page the user views now.
    pub context_item: Option<String>,
}

/// `POST /v1/recommendations`: a visitor without an id.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionAsk {
    pub items: Vec<String>,
    pub attributes: Vec<(String, String)>,
    pub wanted: Wanted,
}

pub const USER_PARAMETERS: [&str; 6] = [
    "n",
    "category",
    "min_price",
    "max_price",
    "exclude",
    "context_item",
];
pub const SIMILAR_PARAMETERS: [&str; 1] = ["n"];

/// A query string's pairs, decoded; a parameter not in `known` or given twice (other than
/// `exclude`, which may repeat) is refused.
fn pairs(query: Option<&str>, known: &[&str]) -> Result<BTreeMap<String, Vec<String>>, BadRequest> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !known.contains(&&*key) {
            let rule = format!("is not a parameter here; known: {}", known.join(", "));
            return Err(bad(&key, rule));
        }
        let values = found.entry(key.clone().into_owned()).or_default();
        if !values.is_empty() && key != "exclude" {
            return Err(bad(&key, "is given more than once"));
        }
        values.push(value.into_owned());
    }
    Ok(found)
}

fn single<'a>(found: &'a BTreeMap<String, Vec<String>>, name: &str) -> Option<&'a str> {
    found.get(name).and_then(|v| v.first()).map(String::as_str)
}

pub fn user_ask(
    user_id: &str,
    query: Option<&str>,
    limits: &Limits,
) -> Result<UserAsk, BadRequest> {
    let user_id = id("user_id", user_id, limits)?;
    let found = pairs(query, &USER_PARAMETERS)?;
    let exclude: Vec<String> = found
        .get("exclude")
        .into_iter()
        .flatten()
        .flat_map(|v| v.split(','))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    let wanted = wanted(
        single(&found, "n")
            .map(|n| parse_n(n, limits))
            .transpose()?,
        single(&found, "category").map(str::to_owned),
        (number(&found, "min_price")?, number(&found, "max_price")?),
        exclude,
        limits,
    )?;
    let context_item = single(&found, "context_item")
        .map(|item| id("context_item", item, limits))
        .transpose()?;
    Ok(UserAsk {
        user_id,
        wanted,
        context_item,
    })
}

/// `n` of `GET /v1/items/{item_id}/similar`.
pub fn similar_ask(
    item_id: &str,
    query: Option<&str>,
    limits: &Limits,
) -> Result<(String, usize), BadRequest> {
    let item_id = id("item_id", item_id, limits)?;
    let found = pairs(query, &SIMILAR_PARAMETERS)?;
    let n = single(&found, "n")
        .map(|n| parse_n(n, limits))
        .transpose()?
        .unwrap_or(limits.default_n);
    Ok((item_id, n))
}

/// The body of `POST /v1/recommendations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    items: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    n: Option<u64>,
    category: Option<String>,
    min_price: Option<f64>,
    max_price: Option<f64>,
    #[serde(default)]
    exclude: Vec<String>,
}

pub fn session_ask(body: &[u8], limits: &Limits) -> Result<SessionAsk, BadRequest> {
    let body: SessionBody =
        serde_json::from_slice(body).map_err(|err| bad("body", err.to_string()))?;
    if body.items.is_empty() {
        return Err(bad("items", "must name at least one item"));
    }
    let items = ids("items", body.items, limits)?;
    if body.attributes.len() > limits.max_attributes {
        let rule = format!("may hold at most {} attributes", limits.max_attributes);
        return Err(bad("attributes", rule));
    }
    let too_long = |s: &str| s.is_empty() || s.len() > limits.max_attribute_len;
    if let Some((k, _)) = body
        .attributes
        .iter()
        .find(|(k, v)| too_long(k) || too_long(v))
    {
        let rule = format!(
            "{k:?}: names and values must be 1 to {} bytes",
            limits.max_attribute_len
        );
        return Err(bad("attributes", rule));
    }
    let n = body
        .n
        .map(|n| in_range_n(n, &n.to_string(), limits))
        .transpose()?;
    let price = (
        body.min_price.map(|p| price("min_price", p)).transpose()?,
        body.max_price.map(|p| price("max_price", p)).transpose()?,
    );
    let wanted = wanted(n, body.category, price, body.exclude, limits)?;
    Ok(SessionAsk {
        items,
        attributes: body.attributes.into_iter().collect(),
        wanted,
    })
}

fn wanted(
    n: Option<usize>,
    category: Option<String>,
    (min, max): (Option<f64>, Option<f64>),
    exclude: Vec<String>,
    limits: &Limits,
) -> Result<Wanted, BadRequest> {
    if let Some(category) = &category {
        if category.is_empty() || category.len() > limits.max_id_len {
            let rule = format!("must be 1 to {} bytes", limits.max_id_len);
            return Err(bad("category", rule));
        }
    }
    let price = match (min, max) {
        (None, None) => None,
        (min, max) => {
            let range = PriceRange {
                min: min.unwrap_or(0.0),
                max: max.unwrap_or(f64::INFINITY),
            };
            if range.min > range.max {
                return Err(bad("max_price", "must be at least min_price"));
            }
            Some(range)
        }
    };
    Ok(Wanted {
        n: n.unwrap_or(limits.default_n),
        category,
        price,
        exclude: ids("exclude", exclude, limits)?,
    })
}

fn parse_n(raw: &str, limits: &Limits) -> Result<usize, BadRequest> {
    let n: u64 = raw.parse().map_err(|_| {
        bad(
            "n",
            format!("must be an integer from 1 to {}, got {raw:?}", limits.max_n),
        )
    })?;
    in_range_n(n, raw, limits)
}

fn in_range_n(n: u64, raw: &str, limits: &Limits) -> Result<usize, BadRequest> {
    if n == 0 || n > limits.max_n as u64 {
        let rule = format!("must be an integer from 1 to {}, got {raw}", limits.max_n);
        return Err(bad("n", rule));
    }
    Ok(n as usize)
}

fn number(found: &BTreeMap<String, Vec<String>>, name: &str) -> Result<Option<f64>, BadRequest> {
    let Some(raw) = single(found, name) else {
        return Ok(None);
    };
    let value: f64 = raw
        .parse()
        .map_err(|_| bad(name, format!("must be a number, got {raw:?}")))?;
    price(name, value).map(Some)
}

fn price(name: &str, value: f64) -> Result<f64, BadRequest> {
    if !value.is_finite() || value < 0.0 {
        return Err(bad(
            name,
            format!("must be a finite number at least 0, got {value}"),
        ));
    }
    Ok(value)
}

fn id(name: &str, value: &str, limits: &Limits) -> Result<String, BadRequest> {
    if value.is_empty() || value.len() > limits.max_id_len || value.trim() != value {
        let rule = format!(
            "must be 1 to {} bytes without surrounding spaces, got {} bytes",
            limits.max_id_len,
            value.len()
        );
        return Err(bad(name, rule));
    }
    Ok(value.to_owned())
}

fn ids(name: &str, values: Vec<String>, limits: &Limits) -> Result<Vec<String>, BadRequest> {
    if values.len() > limits.max_items {
        let rule = format!(
            "may name at most {} items, got {}",
            limits.max_items,
            values.len()
        );
        return Err(bad(name, rule));
    }
    values
        .iter()
        .try_for_each(|v| id(name, v, limits).map(drop))?;
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        default_n: 10,
        max_n: 100,
        max_items: 3,
        max_id_len: 16,
        max_attributes: 2,
        max_attribute_len: 8,
    };

    fn refused(result: Result<impl std::fmt::Debug, BadRequest>) -> (String, String) {
        let err = result.expect_err("refused");
        (err.parameter, err.rule)
    }

    #[test]
    fn a_user_ask_reads_every_parameter() {
        let ask = user_ask(
            "u1",
            Some("n=5&category=shoes&min_price=10&max_price=99.5&exclude=a,b&exclude=c&context_item=p%201"),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(ask.wanted.n, 5);
        assert_eq!(ask.wanted.category.as_deref(), Some("shoes"));
        assert_eq!(
            ask.wanted.price,
            Some(PriceRange {
                min: 10.0,
                max: 99.5
            })
        );
        assert_eq!(ask.wanted.exclude, ["a", "b", "c"]);
        assert_eq!(ask.context_item.as_deref(), Some("p 1"));
        let plain = user_ask("u1", None, &LIMITS).unwrap();
        assert_eq!(
            plain.wanted,
            Wanted {
                n: 10,
                ..Wanted::default()
            }
        );
    }

    #[test]
    fn each_bad_parameter_is_named_with_its_rule() {
        let cases = [
            ("n=abc", "n", "integer from 1 to 100"),
            ("n=0", "n", "integer from 1 to 100"),
            ("n=101", "n", "got 101"),
            ("n=-1", "n", "integer"),
            ("n=1&n=2", "n", "more than once"),
            ("colour=red", "colour", "not a parameter"),
            ("min_price=cheap", "min_price", "a number"),
            ("min_price=-1", "min_price", "at least 0"),
            ("max_price=inf", "max_price", "finite"),
            (
                "min_price=10&max_price=5",
                "max_price",
                "at least min_price",
            ),
            ("exclude=a,b,c,d", "exclude", "at most 3"),
            ("category=", "category", "1 to 16 bytes"),
            ("context_item=%20x", "context_item", "surrounding spaces"),
        ];
        for (query, parameter, rule) in cases {
            let (named, said) = refused(user_ask("u", Some(query), &LIMITS));
            assert_eq!(named, parameter, "{query}");
            assert!(said.contains(rule), "{query}: {said}");
        }
        let (named, _) = refused(user_ask(&"u".repeat(17), None, &LIMITS));
        assert_eq!(named, "user_id");
    }

    #[test]
    fn a_session_body_is_checked_field_by_field() {
        let ask = session_ask(
            br#"{"items":["a","b"],"attributes":{"region":"eu"},"n":3,"category":"tech"}"#,
            &LIMITS,
        )
        .unwrap();
        assert_eq!(ask.items, ["a", "b"]);
        assert_eq!(ask.attributes, [("region".to_string(), "eu".to_string())]);
        assert_eq!(
            (ask.wanted.n, ask.wanted.category.as_deref()),
            (3, Some("tech"))
        );
        let cases: [(&[u8], &str, &str); 7] = [
            (b"{", "body", "EOF"),
            (br#"{"items":[]}"#, "items", "at least one"),
            (
                br#"{"items":["a"],"colour":1}"#,
                "body",
                "unknown field `colour`",
            ),
            (br#"{"items":["a","b","c","d"]}"#, "items", "at most 3"),
            (br#"{"items":["a"],"n":1000}"#, "n", "from 1 to 100"),
            (
                br#"{"items":["a"],"attributes":{"a":"1","b":"2","c":"3"}}"#,
                "attributes",
                "at most 2",
            ),
            (
                br#"{"items":["a"],"attributes":{"region":"far-too-long"}}"#,
                "attributes",
                "1 to 8 bytes",
            ),
        ];
        for (body, parameter, rule) in cases {
            let (named, said) = refused(session_ask(body, &LIMITS));
            assert_eq!(named, parameter, "{}", String::from_utf8_lossy(body));
            assert!(said.contains(rule), "{said}");
        }
    }
}
