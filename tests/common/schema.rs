//! A second, independent JSON Schema validator ([boon](https://docs.rs/boon)) to judge what luka's random-value
//! generator makes, beside the validator luka itself checks with. Formats are asserted, as luka asserts them.

use std::path::Path;

use serde_json::Value;

pub struct SecondOpinion {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl SecondOpinion {
    /// `schema` compiled by boon (draft 2020-12 unless it says otherwise), or why boon refuses it.
    pub fn inline(schema: &Value) -> Result<Self, String> {
        let location = "urn:luka:second-opinion";
        let mut compiler = Self::compiler();
        compiler
            .add_resource(location, schema.clone())
            .map_err(|e| e.to_string())?;
        Self::compile(compiler, location)
    }

    /// The schema file at `path` (its sibling files load as boon finds them).
    pub fn file(path: &Path) -> Result<Self, String> {
        let absolute = std::path::absolute(path).map_err(|e| e.to_string())?;
        Self::compile(Self::compiler(), &absolute.display().to_string())
    }

    fn compiler() -> boon::Compiler {
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        compiler.enable_format_assertions();
        compiler
    }

    fn compile(mut compiler: boon::Compiler, location: &str) -> Result<Self, String> {
        let mut schemas = boon::Schemas::new();
        let index = compiler.compile(location, &mut schemas).map_err(|e| format!("{e:#}"))?;
        Ok(Self { schemas, index })
    }

    /// Ok when boon finds `value` valid; else boon's account of why not.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        self.schemas.validate(value, self.index).map_err(|e| format!("{e:#}"))
    }
}
