//! HTTP basic auth against `[[users]]`: an `Authorization` header in, the matching user out.

use base64::Engine;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::User;

/// Finds the user whose name and password match the `Authorization: Basic ...` header.
pub fn authenticate<'u>(users: &'u [User], authorization: Option<&str>) -> Result<&'u User, ApiError> {
    if users.is_empty() {
        return Err(ApiError::Unauthenticated(
            "no users are configured; add a [[users]] entry to config.toml to use the produce API".into(),
        ));
    }
    let header = authorization
        .ok_or_else(|| ApiError::Unauthenticated("send HTTP basic auth credentials (curl -u user:password)".into()))?;
    let encoded = basic_credentials(header)
        .ok_or_else(|| ApiError::Unauthenticated("only HTTP basic auth is supported".into()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::Unauthenticated("the basic auth credentials are not valid base64".into()))?;
    let decoded = String::from_utf8_lossy(&decoded);
    let (name, password) = decoded
        .split_once(':')
        .ok_or_else(|| ApiError::Unauthenticated("basic auth credentials must be user:password".into()))?;
    check_credentials(users, name, password)
}

/// What follows `Basic ` in an `Authorization` header; none for another scheme. The scheme's name is
/// case-insensitive (RFC 9110, section 11.1).
fn basic_credentials(header: &str) -> Option<&str> {
    header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials)
}

/// For webhook senders that cannot send basic auth: the `user` and `pass` query parameters, else basic auth. A
/// sender's own `Authorization` of another scheme (a push service's bearer token for its receiver) does not hide
/// the query's credentials; basic auth, when sent, is the one used.
pub fn authenticate_webhook<'u>(
    users: &'u [User],
    authorization: Option<&str>,
    query: Option<&str>,
) -> Result<&'u User, ApiError> {
    let param = |wanted: &str| {
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == wanted)
            .map(|(_, v)| v.into_owned())
    };
    let basic = authorization.and_then(basic_credentials).is_some();
    match (basic, param("user"), param("pass")) {
        (false, Some(name), Some(password)) if !users.is_empty() => check_credentials(users, &name, &password),
        _ => authenticate(users, authorization),
    }
}

/// The user with this name and password.
fn check_credentials<'u>(users: &'u [User], name: &str, password: &str) -> Result<&'u User, ApiError> {
    // Every user is compared in constant time so timing tells nothing about which names exist.
    let mut found = None;
    for user in users {
        let name_ok = user.name.as_bytes().ct_eq(name.as_bytes());
        let password_ok = user.password.as_bytes().ct_eq(password.as_bytes());
        if bool::from(name_ok & password_ok) {
            found = Some(user);
        }
    }
    found.ok_or(ApiError::WrongCredentials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicPattern;

    fn users() -> Vec<User> {
        vec![User {
            name: "demo".into(),
            password: "s3cret".into(),
            topics: vec![TopicPattern::parse("*").unwrap()],
            read_topics: Vec::new(),
            requests_per_second: None,
            records_per_second: None,
            burst_seconds: 1,
        }]
    }

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    #[test]
    fn accepts_the_right_password_only() {
        let users = users();
        assert_eq!(authenticate(&users, Some(&basic("demo:s3cret"))).unwrap().name, "demo");
        assert!(authenticate(&users, Some(&basic("demo:wrong"))).is_err());
        assert!(authenticate(&users, Some(&basic("other:s3cret"))).is_err());
        assert!(authenticate(&users, None).is_err());
        assert!(authenticate(&users, Some("Bearer x")).is_err());
        // The scheme's name in any case.
        let upper = basic("demo:s3cret").replace("Basic", "BASIC");
        assert_eq!(authenticate(&users, Some(&upper)).unwrap().name, "demo");
        assert!(
            authenticate(&[], Some(&basic("demo:s3cret")))
                .unwrap_err()
                .to_string()
                .contains("no users")
        );
    }

    /// `/webhook` takes the query's credentials unless basic auth is sent: a sender's bearer token for its
    /// receiver does not hide them.
    #[test]
    fn webhook_query_credentials_stand_beside_another_scheme() {
        let users = users();
        let query = Some("topic=t&user=demo&pass=s3cret");
        let wrong = Some("topic=t&user=demo&pass=wrong");
        let name = |r: Result<&User, ApiError>| r.map(|u| u.name.clone()).map_err(|e| e.to_string());
        assert_eq!(name(authenticate_webhook(&users, None, query)), Ok("demo".into()));
        assert_eq!(
            name(authenticate_webhook(&users, Some("Bearer eyJh"), query)),
            Ok("demo".into())
        );
        assert!(authenticate_webhook(&users, Some("Bearer eyJh"), wrong).is_err());
        // Basic auth sent is the one used, right or wrong.
        assert!(authenticate_webhook(&users, Some(&basic("demo:wrong")), query).is_err());
        assert_eq!(
            name(authenticate_webhook(&users, Some(&basic("demo:s3cret")), wrong)),
            Ok("demo".into())
        );
        assert!(authenticate_webhook(&users, Some("Bearer eyJh"), Some("topic=t")).is_err());
    }
}
