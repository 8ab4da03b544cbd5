//! Editor types: the lua-language-server annotation files (`---@meta`) describing what handlers and test files
//! can use, embedded in the binary; `luka types DIR` writes them under `DIR/.luka/types/`, with a `.luarc.json`
//! that points the language server at them. Their one source is the shipped `functions/` folder (which is what
//! `luka types functions` writes). A test holds the annotations against the modules the runtime installs.

use std::io;
use std::path::{Path, PathBuf};

/// The annotation files, by file name.
pub const FILES: [(&str, &str); 3] = [
    ("luka.lua", include_str!("../../functions/.luka/types/luka.lua")),
    (
        "luka_test.lua",
        include_str!("../../functions/.luka/types/luka_test.lua"),
    ),
    ("luau.lua", include_str!("../../functions/.luka/types/luau.lua")),
];

/// Where the annotation files go, inside the folder given (hidden, so luka never serves them).
pub const FOLDER: &str = ".luka/types";

/// The language server's settings: Lua 5.1 (Luau's base) with Luau's compound assignment and `continue`; the
/// rest of Luau's syntax (type annotations, `//`, if-expressions, backtick strings) is not understood by it.
pub const LUARC: &str = include_str!("../../functions/.luarc.json");

/// What `luka types` did.
#[derive(Debug, PartialEq, Eq)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub luarc: Luarc,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Luarc {
    /// Written (there was none, or it was luka's own).
    Written(PathBuf),
    /// The folder has its own `.luarc.json`, left as it is; it needs `.luka/types` in `workspace.library`.
    Kept(PathBuf),
}

/// Writes the annotation files into `dir/.luka/types/` (replacing older ones) and `dir/.luarc.json` unless the
/// folder has one of its own.
pub fn write(dir: &Path) -> io::Result<Written> {
    let folder = dir.join(FOLDER);
    std::fs::create_dir_all(&folder)?;
    let mut files = Vec::new();
    for (name, text) in FILES {
        let path = folder.join(name);
        std::fs::write(&path, text)?;
        files.push(path);
    }
    let luarc = dir.join(".luarc.json");
    let luarc = match std::fs::read_to_string(&luarc) {
        Ok(existing) if existing != LUARC => Luarc::Kept(luarc),
        Ok(_) => Luarc::Written(luarc),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::write(&luarc, LUARC)?;
            Luarc::Written(luarc)
        }
        Err(e) => return Err(e),
    };
    Ok(Written { files, luarc })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use mlua::{Table, Value};

    use super::*;
    use crate::lua::state::VmShared;

    /// What an annotation file declares: module → members, global functions, class → fields and methods.
    #[derive(Debug, Default)]
    struct Declared {
        modules: BTreeMap<String, BTreeSet<String>>,
        functions: BTreeSet<String>,
        classes: BTreeMap<String, BTreeSet<String>>,
    }

    fn declared(text: &str) -> Declared {
        let mut d = Declared::default();
        let mut class: Option<String> = None;
        let mut class_table: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines() {
            let word = |rest: &str| {
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                    .next()
                    .unwrap_or("")
                    .to_owned()
            };
            if let Some(rest) = line.strip_prefix("---@class ") {
                class = Some(word(rest));
                d.classes.entry(word(rest)).or_default();
            } else if let (Some(rest), Some(class)) = (line.strip_prefix("---@field "), &class) {
                d.classes.get_mut(class).unwrap().insert(word(rest));
            } else if let Some(rest) = line.strip_prefix("local ") {
                // `local Request = {}` after a class: its methods are the class's.
                if let (Some(class), Some(name)) = (&class, rest.strip_suffix(" = {}")) {
                    class_table.insert(name.to_owned(), class.clone());
                }
            } else if let Some(rest) = line.strip_prefix("function ") {
                let name = word(rest);
                if let Some((table, method)) = rest.split_once('(').and_then(|(n, _)| n.split_once(':')) {
                    d.classes
                        .get_mut(&class_table[table])
                        .unwrap()
                        .insert(method.to_owned());
                } else if let Some((module, member)) = name.split_once('.') {
                    d.modules
                        .entry(module.to_owned())
                        .or_default()
                        .insert(member.to_owned());
                } else {
                    d.functions.insert(name);
                }
            } else if let Some((name, _)) = line.split_once(" = ")
                && !name.starts_with('-')
                && !name.contains(' ')
            {
                match name.split_once('.') {
                    Some((module, member)) => d
                        .modules
                        .entry(module.to_owned())
                        .or_default()
                        .insert(member.to_owned()),
                    None => d.modules.entry(name.to_owned()).or_default().insert(String::new()),
                };
            }
            if line.is_empty() {
                class = None;
            }
        }
        for members in d.modules.values_mut() {
            members.remove("");
        }
        d
    }

    fn file(name: &str) -> Declared {
        declared(FILES.iter().find(|(n, _)| *n == name).unwrap().1)
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn keys(table: &Table) -> BTreeSet<String> {
        table.pairs::<String, Value>().map(|pair| pair.unwrap().0).collect()
    }

    #[test]
    fn the_annotations_declare_every_module_and_function_a_handler_sees_and_nothing_else() {
        let standard = keys(&crate::lua::vm::standard_lua().unwrap().globals());
        let lua = crate::lua::vm::handler_lua(&crate::lua::test_context(), &Arc::new(VmShared::default())).unwrap();
        let globals = lua.globals();
        let luka = file("luka.lua");
        let mut annotated: BTreeSet<String> = luka.modules.keys().chain(&luka.functions).cloned().collect();
        // `env` is set per route in each request's environment, not a global of the VM.
        assert!(annotated.remove("env"), "env is annotated");
        let mut installed: BTreeSet<String> = keys(&globals).difference(&standard).cloned().collect();
        // Not new, but replaced: `print` is `log.info`.
        installed.insert("print".into());
        assert_eq!(
            installed, annotated,
            "globals a handler sees vs. functions/.luka/types/luka.lua"
        );
        for (module, members) in &luka.modules {
            if module == "env" {
                continue;
            }
            let table: Table = globals.get(module.as_str()).unwrap();
            assert_eq!(
                &keys(&table),
                members,
                "members of `{module}` vs. functions/.luka/types/luka.lua"
            );
        }
    }

    #[test]
    fn the_annotations_describe_req_the_response_and_kafka_produce_as_the_runtime_reads_them() {
        let luka = file("luka.lua");
        let mut req: BTreeSet<String> = set(&crate::lua::request::LAZY_FIELDS);
        req.extend(set(&["method", "path", "json"]));
        assert_eq!(luka.classes["luka.Request"], req);
        assert_eq!(luka.classes["luka.Response"], set(&crate::lua::response::FIELDS));
        assert_eq!(
            luka.classes["luka.ProduceCall"],
            set(&crate::lua::modules::kafka::CALL_FIELDS)
        );
        assert_eq!(
            luka.classes["luka.ProduceMessage"],
            set(&crate::lua::modules::kafka::MESSAGE_FIELDS)
        );
        // The deprecated single-message form: the message's fields beside cluster and topic.
        let mut one = set(&crate::lua::modules::kafka::MESSAGE_FIELDS);
        one.extend(set(&crate::lua::modules::kafka::CALL_FIELDS));
        one.remove("messages");
        assert_eq!(luka.classes["luka.ProduceOne"], one);
    }

    #[test]
    fn the_luau_additions_exist_in_the_runtime() {
        let lua = crate::lua::vm::standard_lua().unwrap();
        for (module, members) in file("luau.lua").modules {
            let table: Table = lua.globals().get(module.as_str()).unwrap();
            for member in members {
                assert!(
                    matches!(table.get::<Value>(member.as_str()).unwrap(), Value::Function(_)),
                    "{module}.{member} is annotated in functions/.luka/types/luau.lua but Luau has no such function"
                );
            }
        }
    }

    #[cfg(feature = "embedded-broker")]
    #[test]
    fn the_test_api_annotations_match_the_globals_test_files_get() {
        let lua = mlua::Lua::new();
        let nothing = lua.create_function(|_, ()| Ok(())).unwrap();
        let (api, _, _): (Table, Value, Value) = lua
            .load(crate::testing::PRELUDE)
            .call((nothing.clone(), lua.create_table().unwrap(), nothing))
            .unwrap();
        let test_api = file("luka_test.lua");
        // What `send` gives back is held to the annotations by tests/luka_test.rs, through a real run.
        assert_eq!(keys(&api), test_api.functions);
    }

    #[test]
    fn types_are_written_and_an_own_luarc_is_kept() {
        let dir = std::env::temp_dir().join(format!("luka-types-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = write(&dir).unwrap();
        assert_eq!(written.files.len(), FILES.len());
        assert_eq!(written.luarc, Luarc::Written(dir.join(".luarc.json")));
        std::fs::write(dir.join(".luarc.json"), "{}").unwrap();
        assert_eq!(write(&dir).unwrap().luarc, Luarc::Kept(dir.join(".luarc.json")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
