//! `DescribeConfigs` (API key 32), versions 1 and 2 (non-flexible, the same layout): a topic's configs by name.
//!
//! Added for luka (see `PATCHES.md`), which reads the rules a topic holds its records to (`cleanup.policy`,
//! `max.message.bytes`, the timestamp window) before writing.

use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error,
    primitives::{Boolean, Int8, Int16, Int32, NullableString, String_},
    traits::{ReadType, WriteType},
};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};

/// `resource_type` of a topic.
pub const TOPIC_RESOURCE: i8 = 2;

#[derive(Debug)]
pub struct DescribeConfigsRequest {
    /// (resource type, resource name, config names; `None`: all).
    pub resources: Vec<(i8, String, Option<Vec<String>>)>,
}

impl<W> WriteVersionedType<W> for DescribeConfigsRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((1..=2).contains(&v));
        Int32(self.resources.len() as i32).write(writer)?;
        for (kind, name, keys) in &self.resources {
            Int8(*kind).write(writer)?;
            String_(name.clone()).write(writer)?;
            match keys {
                None => Int32(-1).write(writer)?,
                Some(keys) => {
                    Int32(keys.len() as i32).write(writer)?;
                    for key in keys {
                        String_(key.clone()).write(writer)?;
                    }
                }
            }
        }
        // include_synonyms
        Boolean(false).write(writer)?;
        Ok(())
    }
}

impl RequestBody for DescribeConfigsRequest {
    type ResponseBody = DescribeConfigsResponse;

    const API_KEY: ApiKey = ApiKey::DescribeConfigs;

    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(1)), ApiVersion(Int16(2)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(4));
}

#[derive(Debug)]
pub struct DescribeConfigsResult {
    pub error: Option<Error>,
    pub error_message: Option<String>,
    pub resource_name: String,
    /// (name, value).
    pub configs: Vec<(String, Option<String>)>,
}

#[derive(Debug)]
pub struct DescribeConfigsResponse {
    pub throttle_time_ms: Int32,
    pub results: Vec<DescribeConfigsResult>,
}

fn read_count<R: Read>(reader: &mut R) -> Result<usize, ReadVersionedError> {
    Ok(Int32::read(reader)?.0.max(0) as usize)
}

impl<R> ReadVersionedType<R> for DescribeConfigsResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((1..=2).contains(&v));
        let throttle_time_ms = Int32::read(reader)?;
        let mut results = Vec::new();
        for _ in 0..read_count(reader)? {
            let error = Error::new(Int16::read(reader)?.0);
            let error_message = NullableString::read(reader)?.0;
            let _resource_type = Int8::read(reader)?;
            let resource_name = String_::read(reader)?.0;
            let mut configs = Vec::new();
            for _ in 0..read_count(reader)? {
                let name = String_::read(reader)?.0;
                let value = NullableString::read(reader)?.0;
                let _read_only = Boolean::read(reader)?;
                let _config_source = Int8::read(reader)?;
                let _is_sensitive = Boolean::read(reader)?;
                for _ in 0..read_count(reader)? {
                    let _synonym_name = String_::read(reader)?;
                    let _synonym_value = NullableString::read(reader)?;
                    let _synonym_source = Int8::read(reader)?;
                }
                configs.push((name, value));
            }
            results.push(DescribeConfigsResult {
                error,
                error_message,
                resource_name,
                configs,
            });
        }
        Ok(Self {
            throttle_time_ms,
            results,
        })
    }
}
