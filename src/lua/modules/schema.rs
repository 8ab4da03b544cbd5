//! `schema.validate(topic, value)`: the topic's value schema applied to a Lua value, without producing; gives
//! `true`, or `false` and the list of violations (each `<JSON pointer>: <what was expected>`).
//! `schema.random(topic)`: a random value valid against the topic's value schema.

use std::sync::Arc;

use mlua::{Lua, Result, Table, Value};

use super::{KafkaContext, answer, raising};
use crate::lua::convert::{self, Budget};
use crate::lua::state::VmShared;
use crate::produce;
use crate::schema::Schema;

pub fn module(lua: &Lua, context: Arc<KafkaContext>, clock: Arc<VmShared>) -> Result<Table> {
    let table = lua.create_table()?;
    let context_for_random = Arc::clone(&context);
    let validate = lua.create_function(move |lua, (topic, value): (String, Value)| {
        match check(&context, &clock, &topic, &value) {
            Ok(violations) => {
                let pair = lua.create_table()?;
                pair.raw_set(1, violations.is_empty())?;
                if !violations.is_empty() {
                    pair.raw_set(2, lua.create_sequence_from(violations)?)?;
                }
                answer(lua, Ok(pair))
            }
            Err(e) => answer(lua, Err::<Value, _>(format!("schema.validate: {e}"))),
        }
    })?;
    // `raising` passes one result through; the Lua side spreads the pair into two return values.
    let spread: mlua::Function = lua
        .load("local f = ... return function(...) local r = f(...) return r[1], r[2] end")
        .set_name("=luka.schema")
        .call(raising(lua, validate)?)?;
    table.set("validate", spread)?;
    let random_context = Arc::clone(&context_for_random);
    let random = lua.create_function(move |lua, topic: String| match value_schema(&random_context, &topic) {
        Ok((schema, probability)) => match schema.random(&mut rand::rng(), probability) {
            Ok(value) => answer(lua, Ok(convert::from_json(lua, &value)?)),
            Err(e) => answer(lua, Err::<Value, _>(format!("schema.random: {e}"))),
        },
        Err(e) => answer(lua, Err::<Value, _>(format!("schema.random: {e}"))),
    })?;
    table.set("random", raising(lua, random)?)?;
    Ok(table)
}

/// The value schema configured for `topic`, with the topic's chance of optional properties.
fn value_schema<'c>(context: &'c KafkaContext, topic: &str) -> std::result::Result<(&'c Arc<Schema>, f64), String> {
    let config = produce::resolve(&context.config, None, topic).map_err(|e| e.to_string())?;
    let schema = config
        .value_schema
        .as_ref()
        .ok_or_else(|| format!("topic '{topic}' has no value_schema in config.toml"))?;
    Ok((schema, config.optional_probability))
}

fn check(
    context: &KafkaContext,
    clock: &Arc<VmShared>,
    topic: &str,
    value: &Value,
) -> std::result::Result<Vec<String>, String> {
    let (schema, _) = value_schema(context, topic)?;
    let json = convert::to_json_within(value, &mut Budget::metered(clock))?;
    Ok(schema.violations(&json))
}
