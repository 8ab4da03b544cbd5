//! Strings that look real: values for `format`s, and strings picked by the property's name (`email`, `city`).

use fake::Fake;
use fake::faker::address::en::{CityName, CountryName, StreetName, ZipCode};
use fake::faker::company::en::CompanyName;
use fake::faker::internet::en::{DomainSuffix, SafeEmail, Username};
use fake::faker::lorem::en::{Sentence, Word};
use fake::faker::name::en::{FirstName, LastName, Name};
use fake::faker::phone_number::en::PhoneNumber;
use rand::Rng;

use super::Generator;

impl<R: Rng> Generator<'_, R> {
    pub(super) fn formatted(&mut self, format: &str) -> String {
        let rng = &mut *self.rng;
        match format {
            "date" => format!(
                "20{:02}-{:02}-{:02}",
                rng.random_range(0..30),
                rng.random_range(1..=12),
                rng.random_range(1..=28)
            ),
            "time" => format!(
                "{:02}:{:02}:{:02}Z",
                rng.random_range(0..24),
                rng.random_range(0..60),
                rng.random_range(0..60)
            ),
            "date-time" => format!(
                "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                rng.random_range(0..30),
                rng.random_range(1..=12),
                rng.random_range(1..=28),
                rng.random_range(0..24),
                rng.random_range(0..60),
                rng.random_range(0..60)
            ),
            "email" | "idn-email" => SafeEmail().fake_with_rng(rng),
            "uuid" => uuid::Builder::from_random_bytes(rng.random()).into_uuid().to_string(),
            "uri-template" => format!("https://{}/{{id}}", self.hostname()),
            "regex" => "^[a-z]+[0-9]*$".to_owned(),
            "uri" | "url" | "iri" | "uri-reference" | "iri-reference" => format!(
                "https://{}/{}",
                self.hostname(),
                Word().fake_with_rng::<String, _>(self.rng)
            ),
            "hostname" | "idn-hostname" => self.hostname(),
            "ipv4" => format!(
                "{}.{}.{}.{}",
                rng.random_range(1..=223),
                rng.random::<u8>(),
                rng.random::<u8>(),
                rng.random_range(1..=254)
            ),
            "json-pointer" => format!(
                "/{}/{}",
                Word().fake_with_rng::<String, _>(rng),
                rng.random_range(0..10)
            ),
            "relative-json-pointer" => format!("{}/{}", rng.random_range(0..3), Word().fake_with_rng::<String, _>(rng)),
            "duration" => format!(
                "P{}DT{}H{}M",
                rng.random_range(0..30),
                rng.random_range(0..24),
                rng.random_range(0..60)
            ),
            "ipv6" => (0..8)
                .map(|_| format!("{:x}", rng.random::<u16>()))
                .collect::<Vec<_>>()
                .join(":"),
            _ => Word().fake_with_rng(rng),
        }
    }

    fn hostname(&mut self) -> String {
        let word: String = Word().fake_with_rng(self.rng);
        let suffix: String = DomainSuffix().fake_with_rng(self.rng);
        format!("{}.{suffix}", word.to_lowercase())
    }

    /// A string that fits the property's name: `email`, `city`, `name`...
    pub(super) fn named_string(&mut self, name: Option<&str>) -> String {
        let name = name.unwrap_or("").to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
        let rng = &mut *self.rng;
        if has(&["email", "mail"]) {
            SafeEmail().fake_with_rng(rng)
        } else if has(&["firstname", "first_name", "given"]) {
            FirstName().fake_with_rng(rng)
        } else if has(&["lastname", "last_name", "surname", "family"]) {
            LastName().fake_with_rng(rng)
        } else if has(&["user", "login", "handle"]) {
            Username().fake_with_rng(rng)
        } else if has(&["name", "customer", "author", "owner"]) {
            Name().fake_with_rng(rng)
        } else if has(&["city", "town"]) {
            CityName().fake_with_rng(rng)
        } else if has(&["country"]) {
            CountryName().fake_with_rng(rng)
        } else if has(&["street", "address"]) {
            StreetName().fake_with_rng(rng)
        } else if has(&["zip", "postal"]) {
            ZipCode().fake_with_rng(rng)
        } else if has(&["phone", "mobile", "tel"]) {
            PhoneNumber().fake_with_rng(rng)
        } else if has(&["company", "organization", "organisation"]) {
            CompanyName().fake_with_rng(rng)
        } else if has(&["url", "uri", "link", "website"]) {
            self.formatted("uri")
        } else if name == "id" || name.ends_with("_id") || name.ends_with("id") && name.len() > 2 {
            uuid::Builder::from_random_bytes(rng.random()).into_uuid().to_string()
        } else if has(&["description", "comment", "message", "text", "note"]) {
            Sentence(3..8).fake_with_rng(rng)
        } else {
            Word().fake_with_rng(rng)
        }
    }
}
