//! `InitProducerId` (API key 22): a producer id and epoch for idempotent produce (no transactional id).
//!
//! Added for luka (see `PATCHES.md`); versions 0 to 4. Version 2 is the first flexible one, version 3 adds the
//! producer id and epoch to the request (to bump an epoch; -1 to ask for a new id).

use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error,
    primitives::{CompactNullableString, Int16, Int32, Int64, NullableString, TaggedFields},
    traits::{ReadType, WriteType},
};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};

#[derive(Debug)]
pub struct InitProducerIdRequest {
    /// `None` for an idempotent (non-transactional) producer.
    pub transactional_id: Option<String>,

    /// Ignored by brokers for a non-transactional producer.
    pub transaction_timeout_ms: Int32,

    /// The current producer id to bump the epoch of, or -1. Added in version 3.
    pub producer_id: Int64,

    /// The current epoch, or -1. Added in version 3.
    pub producer_epoch: Int16,
}

impl InitProducerIdRequest {
    /// A request for a new idempotent producer id.
    pub fn idempotent() -> Self {
        Self {
            transactional_id: None,
            transaction_timeout_ms: Int32(i32::MAX),
            producer_id: Int64(-1),
            producer_epoch: Int16(-1),
        }
    }
}

impl<W> WriteVersionedType<W> for InitProducerIdRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 4);

        if v >= 2 {
            CompactNullableString(self.transactional_id.clone()).write(writer)?;
        } else {
            NullableString(self.transactional_id.clone()).write(writer)?;
        }
        self.transaction_timeout_ms.write(writer)?;
        if v >= 3 {
            self.producer_id.write(writer)?;
            self.producer_epoch.write(writer)?;
        }
        if v >= 2 {
            TaggedFields::default().write(writer)?;
        }
        Ok(())
    }
}

impl RequestBody for InitProducerIdRequest {
    type ResponseBody = InitProducerIdResponse;

    const API_KEY: ApiKey = ApiKey::InitProducerId;

    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(4)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(2));
}

#[derive(Debug)]
pub struct InitProducerIdResponse {
    pub throttle_time_ms: Int32,
    pub error: Option<Error>,
    pub producer_id: Int64,
    pub producer_epoch: Int16,
}

impl<R> ReadVersionedType<R> for InitProducerIdResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 4);

        let throttle_time_ms = Int32::read(reader)?;
        let error = Error::new(Int16::read(reader)?.0);
        let producer_id = Int64::read(reader)?;
        let producer_epoch = Int16::read(reader)?;
        if v >= 2 {
            TaggedFields::read(reader)?;
        }
        Ok(Self {
            throttle_time_ms,
            error,
            producer_id,
            producer_epoch,
        })
    }
}
