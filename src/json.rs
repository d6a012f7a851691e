//! The `json` Lua module: `encode` and `decode` on serde_json.
//!
//! ```lua
//! local json = require "json"
//! json.encode{name = "a", tags = {"x", "y"}}     --> {"name":"a","tags":["x","y"]}
//! json.encode(t, {indent = true})                 -- pretty: two spaces per level
//! local v, err = json.decode('{"a": [1, 2.5, null]}')   -- v.a[3] == json.null
//! json.encode(json.array())                       --> []
//! json.encode(json.object{[1] = "x"})             --> {"1":"x"}
//! ```
//!
//! The rules (also in the README):
//!
//! - **null**: `json.null` is a light userdata (the NULL pointer, the very value `gett.null` is).
//!   It encodes to `null`. Decoding gives `json.null` for a null inside an array (so positions
//!   stay) and leaves a null member of an object out (it reads as `nil`, like an absent one);
//!   `json.decode(s, {keep_nulls = true})` keeps those as `json.null` too. A top-level `null`
//!   decodes to `json.null` (so `nil` always means failure). `json.encode(nil)` is `null`.
//! - **arrays and objects**: a table whose keys are exactly `1..n` is an array; one whose keys
//!   are all strings is an object; an empty table is an object (`{}`). `json.array(t)` and
//!   `json.object(t)` mark a table (they set a metatable; any metatable with a field
//!   `__jsontype = "array"` or `"object"` works the same): a marked array encodes `1..max` with
//!   `null` for holes, even when empty; a marked object writes integer keys as strings. Other
//!   tables (mixed keys, holes, keys of other types) raise an error. Arrays that `decode`
//!   returns carry the `json.array` mark, so `[]` encodes back to `[]`.
//! - **numbers**: Lua integers are JSON integers and floats keep a fraction or exponent (`1.0`),
//!   so `math.type` survives a round trip. Decoded integers that do not fit 64 bits become
//!   floats. NaN and infinities cannot be encoded (error).
//! - **strings** must be UTF-8 (keys too): anything else raises an error naming where it is.
//!   Object keys are written in sorted order.
//! - **limits**: nesting deeper than 127 levels fails (decode: `nil, message`; encode: an
//!   error), and a table that contains itself raises an error instead of recursing.
//! - **errors**: `decode` of text that is not JSON returns `nil, message` (`json: expected
//!   value at line 1 column 1`); misuse (a non-string to decode, a function, a cycle, NaN) raises.

use crate::convert::{bad_arg, lua_type};
use std::ffi::c_void;

use mlua::{IntoLuaMulti, Lua, MultiValue, Table, Value};
use serde_json::{Map, Number, Value as Json};

/// Deepest nesting accepted: serde_json's own recursion limit for decoding (it refuses a
/// 128th level), so that whatever encodes also decodes.
pub const MAX_DEPTH: usize = 127;

const ARRAY_MT: &str = "flufs.json.array";
const OBJECT_MT: &str = "flufs.json.object";
const MARK: &str = "__jsontype";

/// Make `require "json"` return the module.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let array_mt = lua.create_table()?;
    array_mt.raw_set(MARK, "array")?;
    array_mt.raw_set("__name", "json.array")?;
    lua.set_named_registry_value(ARRAY_MT, &array_mt)?;
    let object_mt = lua.create_table()?;
    object_mt.raw_set(MARK, "object")?;
    object_mt.raw_set("__name", "json.object")?;
    lua.set_named_registry_value(OBJECT_MT, &object_mt)?;

    let m = lua.create_table()?;
    m.raw_set("null", Value::NULL)?;
    m.raw_set("encode", lua.create_function(encode_lua)?)?;
    m.raw_set("decode", lua.create_function(decode_lua)?)?;
    m.raw_set(
        "array",
        lua.create_function(|lua, t: Value| mark(lua, t, "array", ARRAY_MT))?,
    )?;
    m.raw_set(
        "object",
        lua.create_function(|lua, t: Value| mark(lua, t, "object", OBJECT_MT))?,
    )?;
    lua.register_module("json", m)
}

/// `json.array(t)` / `json.object(t)`: set the marker metatable (a new table when `t` is nil).
fn mark(lua: &Lua, t: Value, kind: &str, key: &str) -> mlua::Result<Table> {
    let mt: Table = lua.named_registry_value(key)?;
    let t = match t {
        Value::Nil => lua.create_table()?,
        Value::Table(t) => t,
        v => return Err(bad_arg(kind, 1, "table or nil", &v)),
    };
    match t.metatable() {
        None => t.set_metatable(Some(mt))?,
        Some(old) if old.to_pointer() == mt.to_pointer() => {}
        Some(_) => {
            return Err(mlua::Error::runtime(format!(
                "json.{kind}: the table already has a metatable (set {MARK} = \"{kind}\" in it instead)"
            )));
        }
    }
    Ok(t)
}

// --- encoding -------------------------------------------------------------------------------

/// One step of the path to a bad value (for messages).
enum Seg {
    Index(i64),
    Key(String),
}

/// An encoding failure and where it happened (innermost segment first while unwinding).
struct EncodeError {
    message: String,
    path: Vec<Seg>,
}

impl EncodeError {
    fn new(message: impl Into<String>) -> EncodeError {
        EncodeError {
            message: message.into(),
            path: Vec::new(),
        }
    }

    fn at(mut self, seg: Seg) -> EncodeError {
        self.path.push(seg);
        self
    }

    fn into_lua_error(self) -> mlua::Error {
        let mut where_ = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Index(i) => where_.push_str(&format!("[{i}]")),
                Seg::Key(k)
                    if !k.is_empty()
                        && !k.starts_with(|c: char| c.is_ascii_digit())
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    where_.push('.');
                    where_.push_str(k);
                }
                Seg::Key(k) => where_.push_str(&format!("[{k:?}]")),
            }
        }
        if where_.is_empty() {
            mlua::Error::runtime(format!("json.encode: {}", self.message))
        } else {
            mlua::Error::runtime(format!("json.encode: {} (at {where_})", self.message))
        }
    }
}

impl From<mlua::Error> for EncodeError {
    fn from(e: mlua::Error) -> EncodeError {
        EncodeError::new(e.to_string())
    }
}

type EncResult<T> = std::result::Result<T, EncodeError>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Array,
    Object,
}

/// Converts Lua values to JSON, remembering the tables being converted (cycle detection).
struct Encoder {
    open: Vec<*const c_void>,
}

/// A string for a message: quoted, bytes that are not UTF-8 (and control characters) as
/// `\xNN`, cut after 40 characters.
fn quoted(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut n = 0;
    'outer: for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if n == 40 {
                out.push_str("...");
                break 'outer;
            }
            n += 1;
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() && (c as u32) < 0x80 => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            if n == 40 {
                out.push_str("...");
                break 'outer;
            }
            n += 1;
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

fn utf8(s: &mlua::LuaString, what: &str) -> EncResult<String> {
    match s.to_str() {
        Ok(t) => Ok(t.to_string()),
        Err(_) => Err(EncodeError::new(format!(
            "{what} is not valid UTF-8 ({})",
            quoted(&s.as_bytes())
        ))),
    }
}

/// The shape a marker metatable asks for.
fn marked_shape(t: &Table) -> EncResult<Option<Shape>> {
    let Some(mt) = t.metatable() else {
        return Ok(None);
    };
    match mt.raw_get::<Value>(MARK)? {
        Value::Nil => Ok(None),
        Value::String(s) if s.as_bytes().as_ref() == b"array" => Ok(Some(Shape::Array)),
        Value::String(s) if s.as_bytes().as_ref() == b"object" => Ok(Some(Shape::Object)),
        v => Err(EncodeError::new(format!(
            "bad {MARK} in a metatable (\"array\" or \"object\" expected, got {})",
            match &v {
                Value::String(s) => format!("{:?}", s.to_string_lossy()),
                v => lua_type(v).to_string(),
            }
        ))),
    }
}

impl Encoder {
    fn value(&mut self, v: &Value) -> EncResult<Json> {
        Ok(match v {
            Value::Nil => Json::Null,
            Value::LightUserData(p) if p.0.is_null() => Json::Null,
            Value::Boolean(b) => Json::Bool(*b),
            Value::Integer(i) => Json::Number((*i).into()),
            Value::Number(f) => match Number::from_f64(*f) {
                Some(n) => Json::Number(n),
                None => {
                    return Err(EncodeError::new(format!(
                        "{} cannot be encoded",
                        if f.is_nan() { "NaN" } else { "infinity" }
                    )));
                }
            },
            Value::String(s) => Json::String(utf8(s, "string")?),
            Value::Table(t) => self.table(t)?,
            v => {
                return Err(EncodeError::new(format!(
                    "a {} cannot be encoded",
                    lua_type(v)
                )));
            }
        })
    }

    fn table(&mut self, t: &Table) -> EncResult<Json> {
        let p = t.to_pointer();
        if self.open.contains(&p) {
            return Err(EncodeError::new("the table contains itself (a cycle)"));
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(EncodeError::new(format!(
                "tables nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.open.push(p);
        let r = self.table_inner(t);
        self.open.pop();
        r
    }

    fn table_inner(&mut self, t: &Table) -> EncResult<Json> {
        let marked = marked_shape(t)?;
        let mut entries: Vec<(Value, Value)> = Vec::new();
        let (mut ints, mut max, mut strings) = (0i64, 0i64, 0usize);
        let mut odd_key: Option<&'static str> = None;
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            match &k {
                Value::Integer(i) if *i >= 1 => {
                    ints += 1;
                    max = max.max(*i);
                }
                Value::Integer(_) => odd_key = odd_key.or(Some("an integer key below 1")),
                Value::String(_) => strings += 1,
                Value::Number(_) => odd_key = odd_key.or(Some("a non-integer number key")),
                other => odd_key = odd_key.or(Some(lua_type(other))),
            }
            entries.push((k, v));
        }
        let shape = match marked {
            Some(s) => s,
            None if entries.is_empty() => Shape::Object,
            None if odd_key.is_none() && strings == 0 && max == ints => Shape::Array,
            None if odd_key.is_none() && ints == 0 => Shape::Object,
            None if odd_key.is_none() && strings == 0 => {
                return Err(EncodeError::new(
                    "an array with holes (keys are not 1..n): mark it with json.array(t) to \
                     write null for the holes, or json.object(t) for an object",
                ));
            }
            None if odd_key.is_none() => {
                return Err(EncodeError::new(
                    "a table with both integer and string keys: use json.object(t) to write \
                     integer keys as strings",
                ));
            }
            None => {
                return Err(EncodeError::new(format!(
                    "a table with {} key cannot be encoded",
                    odd_key.unwrap_or("an unusable")
                )));
            }
        };
        match shape {
            Shape::Array => {
                if strings > 0 || odd_key.is_some() {
                    return Err(EncodeError::new(
                        "an array (json.array) with keys other than 1, 2, 3, ...",
                    ));
                }
                // Holes become null; refuse absurdly sparse arrays ({[1e9] = x}).
                if max - ints > ints.max(1000) {
                    return Err(EncodeError::new(format!(
                        "an array too sparse to encode ({ints} values, largest index {max})"
                    )));
                }
                let mut out = vec![Json::Null; usize::try_from(max).unwrap_or(0)];
                for (k, v) in &entries {
                    if let Value::Integer(i) = k {
                        let j = self.value(v).map_err(|e| e.at(Seg::Index(*i)))?;
                        if let Some(slot) =
                            usize::try_from(*i - 1).ok().and_then(|i| out.get_mut(i))
                        {
                            *slot = j;
                        }
                    }
                }
                Ok(Json::Array(out))
            }
            Shape::Object => {
                let mut out = Map::new();
                for (k, v) in &entries {
                    let key = match k {
                        Value::String(s) => utf8(s, "key")?,
                        Value::Integer(i) => i.to_string(),
                        Value::Number(f) if f.is_finite() => format!("{f}"),
                        other => {
                            return Err(EncodeError::new(format!(
                                "a {} key cannot be encoded",
                                lua_type(other)
                            )));
                        }
                    };
                    let j = self.value(v).map_err(|e| e.at(Seg::Key(key.clone())))?;
                    if out.insert(key.clone(), j).is_some() {
                        return Err(EncodeError::new(format!(
                            "the key {key:?} occurs twice (as a string and as a number)"
                        )));
                    }
                }
                Ok(Json::Object(out))
            }
        }
    }
}

/// A Lua value as JSON (the conversion `json.encode` does), or the error it raises.
pub fn to_json(v: &Value) -> mlua::Result<Json> {
    Encoder { open: Vec::new() }
        .value(v)
        .map_err(EncodeError::into_lua_error)
}

fn encode_lua(lua: &Lua, (v, opts): (Value, Value)) -> mlua::Result<mlua::LuaString> {
    let pretty = match &opts {
        Value::Nil => false,
        Value::Table(o) => match o.raw_get::<Value>("indent")? {
            Value::Nil | Value::Boolean(false) => false,
            Value::Boolean(true) => true,
            v => {
                return Err(mlua::Error::runtime(format!(
                    "json.encode: 'indent' must be a boolean (got {})",
                    lua_type(&v)
                )));
            }
        },
        v => return Err(bad_arg("encode", 2, "table or nil", v)),
    };
    let j = to_json(&v)?;
    let text = if pretty {
        serde_json::to_string_pretty(&j)
    } else {
        serde_json::to_string(&j)
    }
    .map_err(|e| mlua::Error::runtime(format!("json.encode: {e}")))?;
    lua.create_string(text)
}

// --- decoding -------------------------------------------------------------------------------

/// How decoded values become Lua values.
pub struct DecodeOptions {
    /// Keep null members of objects as `json.null` (default: leave them out).
    pub keep_nulls: bool,
}

/// A JSON value as Lua (the conversion `json.decode` does).
pub fn to_lua(lua: &Lua, v: &Json, opts: &DecodeOptions) -> mlua::Result<Value> {
    let array_mt: Option<Table> = lua.named_registry_value(ARRAY_MT).ok();
    to_lua_with(lua, v, opts, array_mt.as_ref())
}

fn to_lua_with(
    lua: &Lua,
    v: &Json,
    opts: &DecodeOptions,
    array_mt: Option<&Table>,
) -> mlua::Result<Value> {
    Ok(match v {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(a) => {
            let t = lua.create_table_with_capacity(a.len(), 0)?;
            for (i, x) in a.iter().enumerate() {
                t.raw_set(i + 1, to_lua_with(lua, x, opts, array_mt)?)?;
            }
            if let Some(mt) = array_mt {
                t.set_metatable(Some(mt.clone()))?;
            }
            Value::Table(t)
        }
        Json::Object(o) => {
            let t = lua.create_table_with_capacity(0, o.len())?;
            for (k, x) in o {
                if opts.keep_nulls || !x.is_null() {
                    t.raw_set(k.as_str(), to_lua_with(lua, x, opts, array_mt)?)?;
                }
            }
            Value::Table(t)
        }
    })
}

/// Parse JSON text: the value, or serde_json's message (with line and column).
pub fn parse(text: &[u8]) -> Result<Json, String> {
    serde_json::from_slice(text).map_err(|e| e.to_string())
}

fn decode_lua(lua: &Lua, (s, opts): (Value, Value)) -> mlua::Result<MultiValue> {
    let Value::String(s) = s else {
        return Err(bad_arg("decode", 1, "string", &s));
    };
    let keep_nulls = match &opts {
        Value::Nil => false,
        Value::Table(o) => match o.raw_get::<Value>("keep_nulls")? {
            Value::Nil => false,
            Value::Boolean(b) => b,
            v => {
                return Err(mlua::Error::runtime(format!(
                    "json.decode: 'keep_nulls' must be a boolean (got {})",
                    lua_type(&v)
                )));
            }
        },
        v => return Err(bad_arg("decode", 2, "table or nil", v)),
    };
    match parse(&s.as_bytes()) {
        Ok(j) => to_lua(lua, &j, &DecodeOptions { keep_nulls })?.into_lua_multi(lua),
        Err(msg) => (Value::Nil, format!("json: {msg}")).into_lua_multi(lua),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lua() -> Lua {
        let lua = Lua::new();
        register(&lua).unwrap();
        crate::gett::register(&lua).unwrap();
        lua
    }

    /// Run a chunk with `json` as a local; returns its first result.
    fn eval<T: mlua::FromLua>(lua: &Lua, code: &str) -> mlua::Result<T> {
        lua.load(format!("local json = require 'json'\n{code}"))
            .eval()
    }

    fn enc(lua: &Lua, expr: &str) -> String {
        eval::<String>(lua, &format!("return json.encode({expr})"))
            .unwrap_or_else(|e| panic!("encode {expr}: {e}"))
    }

    fn enc_err(lua: &Lua, expr: &str) -> String {
        match eval::<String>(lua, &format!("return json.encode({expr})")) {
            Ok(s) => panic!("encode {expr} gave {s}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn scalars() {
        let lua = lua();
        assert_eq!(enc(&lua, "nil"), "null");
        assert_eq!(enc(&lua, "json.null"), "null");
        assert_eq!(enc(&lua, "true"), "true");
        assert_eq!(enc(&lua, "false"), "false");
        assert_eq!(enc(&lua, "42"), "42");
        assert_eq!(enc(&lua, "-7"), "-7");
        assert_eq!(enc(&lua, "math.maxinteger"), "9223372036854775807");
        assert_eq!(enc(&lua, "1.0"), "1.0");
        assert_eq!(enc(&lua, "0.1"), "0.1");
        assert_eq!(enc(&lua, "-2.5e-300"), "-2.5e-300");
        assert_eq!(enc(&lua, "'a\"b\\\\c\\n\\0é'"), r#""a\"b\\c\n\u0000é""#);
    }

    #[test]
    fn tables_become_arrays_or_objects() {
        let lua = lua();
        assert_eq!(enc(&lua, "{1, 'two', true}"), r#"[1,"two",true]"#);
        assert_eq!(enc(&lua, "{b = 1, a = {c = 2}}"), r#"{"a":{"c":2},"b":1}"#);
        assert_eq!(enc(&lua, "{}"), "{}");
        assert_eq!(enc(&lua, "json.array()"), "[]");
        assert_eq!(enc(&lua, "json.array{}"), "[]");
        assert_eq!(enc(&lua, "json.object()"), "{}");
        assert_eq!(enc(&lua, "{1, json.null, 3}"), "[1,null,3]");
        assert_eq!(enc(&lua, "json.array{[1] = 1, [3] = 3}"), "[1,null,3]");
        assert_eq!(
            enc(&lua, "json.object{[1] = 'x', [20] = 'y', z = 1}"),
            r#"{"1":"x","20":"y","z":1}"#
        );
        assert_eq!(enc(&lua, "{a = json.null}"), r#"{"a":null}"#);
        // A metatable of the user's own with the mark.
        assert_eq!(
            enc(
                &lua,
                "setmetatable({}, {__jsontype = 'array', __index = {}})"
            ),
            "[]"
        );
        // Other metatables do not matter.
        assert_eq!(enc(&lua, "setmetatable({1, 2}, {})"), "[1,2]");
        assert_eq!(
            enc(&lua, "{list = {1, {x = 1}}, n = 2}"),
            r#"{"list":[1,{"x":1}],"n":2}"#
        );
        let pretty = enc(&lua, "{a = {1, 2}}, {indent = true}");
        assert_eq!(pretty, "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
        // json.array returns its argument.
        assert!(eval::<bool>(&lua, "local t = {} return json.array(t) == t").unwrap());
    }

    #[test]
    fn encode_errors_raise_and_say_where() {
        let lua = lua();
        let e = enc_err(&lua, "{a = {1, function() end}}");
        assert!(e.contains("a function cannot be encoded (at .a[2])"), "{e}");
        let e = enc_err(&lua, "{['x y'] = {0/0}}");
        assert!(e.contains("NaN cannot be encoded (at [\"x y\"][1])"), "{e}");
        let e = enc_err(&lua, "math.huge");
        assert!(e.contains("infinity"), "{e}");
        let e = enc_err(&lua, "{1, 2, x = 3}");
        assert!(e.contains("both integer and string keys"), "{e}");
        let e = enc_err(&lua, "{[1] = 1, [3] = 3}");
        assert!(e.contains("holes"), "{e}");
        let e = enc_err(&lua, "{[true] = 1}");
        assert!(e.contains("a table with boolean key"), "{e}");
        let e = enc_err(&lua, "{[1.5] = 1}");
        assert!(e.contains("non-integer number key"), "{e}");
        let e = enc_err(&lua, "json.array{x = 1}");
        assert!(e.contains("keys other than 1, 2, 3"), "{e}");
        let e = enc_err(&lua, "json.array{[1e9] = 1}");
        assert!(e.contains("too sparse"), "{e}");
        let e = enc_err(&lua, "{name = 'a\\255b'}");
        assert!(
            e.contains(r#"string is not valid UTF-8 ("a\xffb") (at .name)"#),
            "{e}"
        );
        let e = enc_err(&lua, "{['\\255'] = 1}");
        assert!(e.contains("key is not valid UTF-8"), "{e}");
        let e = enc_err(&lua, "json.object{[1] = 'a', ['1'] = 'b'}");
        assert!(e.contains("occurs twice"), "{e}");
        let e = enc_err(&lua, "io.stdout");
        assert!(e.contains("a userdata cannot be encoded"), "{e}");
        let e = enc_err(&lua, "setmetatable({}, {__jsontype = 'list'})");
        assert!(e.contains("bad __jsontype"), "{e}");
        let e = enc_err(&lua, "{}, {indent = 2}");
        assert!(e.contains("'indent' must be a boolean"), "{e}");
        let e = eval::<String>(&lua, "return json.array(setmetatable({}, {}))").unwrap_err();
        assert!(e.to_string().contains("already has a metatable"), "{e}");
        let e = eval::<String>(&lua, "return json.array(1)").unwrap_err();
        assert!(
            e.to_string()
                .contains("bad argument #1 to 'array' (table or nil expected, got number)"),
            "{e}"
        );
    }

    #[test]
    fn cycles_and_depth_raise_without_overflowing() {
        let lua = lua();
        let e = enc_err(&lua, "(function() local t = {} t.self = t return t end)()");
        assert!(e.contains("contains itself (a cycle) (at .self)"), "{e}");
        let e = enc_err(
            &lua,
            "(function() local a, b = {}, {} a[1] = b b[1] = a return a end)()",
        );
        assert!(e.contains("cycle"), "{e}");
        // The same table twice (not a cycle) is fine.
        assert_eq!(
            enc(&lua, "(function() local s = {1} return {s, s} end)()"),
            "[[1],[1]]"
        );
        let deep = |n: usize| {
            format!("(function() local t = {{}} for i = 1, {n} do t = {{t}} end return t end)()")
        };
        // 127 tables is the limit: the innermost empty one plus 126 around it.
        let ok = enc(&lua, &deep(MAX_DEPTH - 1));
        assert_eq!(ok, format!("{}{{}}{}", "[".repeat(126), "]".repeat(126)));
        let e = enc_err(&lua, &deep(MAX_DEPTH));
        assert!(e.contains("nested deeper than 127 levels"), "{e}");
        let e = enc_err(&lua, &deep(100_000));
        assert!(e.contains("nested deeper"), "{e}");
        // What encodes also decodes.
        assert!(
            eval::<bool>(
                &lua,
                &format!(
                    "return json.decode(json.encode({})) ~= nil",
                    deep(MAX_DEPTH - 1)
                )
            )
            .unwrap()
        );
    }

    #[test]
    fn decode_values() {
        let lua = lua();
        let ok = |code: &str| {
            assert!(
                eval::<bool>(&lua, code).unwrap_or_else(|e| panic!("{code}: {e}")),
                "{code}"
            )
        };
        ok(
            r#"local v = json.decode('{"a": 1, "b": [true, false, null, "x"], "c": {"d": null}}')
              return v.a == 1 and math.type(v.a) == "integer" and v.b[1] == true
                 and v.b[2] == false and v.b[3] == json.null and v.b[4] == "x" and #v.b == 4
                 and v.c.d == nil and next(v.c) == nil"#,
        );
        ok(r#"local v = json.decode('{"d": null}', {keep_nulls = true}) return v.d == json.null"#);
        ok(r#"return json.decode('null') == json.null"#);
        ok(r#"return json.decode(' 12 ') == 12 and json.decode('"s"') == "s""#);
        ok(r#"local f = json.decode('2.0') return math.type(f) == "float" and f == 2"#);
        ok(r#"return math.type(json.decode('1e3')) == "float""#);
        ok(r#"return json.decode('-9223372036854775808') == math.mininteger"#);
        ok(r#"local f = json.decode('18446744073709551615')
              return math.type(f) == "float" and f == 2^64"#);
        ok(r#"return json.decode('"\\u00e9\\ud83d\\ude00"') == "é😀""#);
        ok(r#"local v = json.decode('{"1": "a"}') return v["1"] == "a" and v[1] == nil"#);
        ok(r#"return json.null == require("gett").null"#);
        ok(
            r#"return getmetatable(json.decode('[]')) ~= nil and getmetatable(json.decode('{}')) == nil"#,
        );
    }

    #[test]
    fn round_trips() {
        let lua = lua();
        for text in [
            "[]",
            "{}",
            r#"{"a":[]}"#,
            r#"[1,2.5,-0.0,"x",true,false,null,[],{}]"#,
            r#"{"list":[{"k":"v"},[1,[2,[3]]]],"n":1.0,"s":"é\n\u0001"}"#,
            "9223372036854775807",
            "1e300",
        ] {
            let got = eval::<String>(
                &lua,
                &format!("return json.encode(assert(json.decode({text:?})))"),
            )
            .unwrap_or_else(|e| panic!("{text}: {e}"));
            let want: Json = serde_json::from_str(text).unwrap();
            assert_eq!(got, serde_json::to_string(&want).unwrap(), "{text}");
        }
        // A Lua table survives encode + decode.
        assert!(
            eval::<bool>(
                &lua,
                r#"local t = {name = "x", size = 3, ratio = 0.5, tags = {"a", "b"}, empty = json.array()}
                   local u = json.decode(json.encode(t))
                   return u.name == "x" and math.type(u.size) == "integer" and u.ratio == 0.5
                      and u.tags[2] == "b" and #u.empty == 0 and json.encode(u.empty) == "[]""#
            )
            .unwrap()
        );
    }

    #[test]
    fn decode_failures_return_nil_and_a_message() {
        let lua = lua();
        let fail = |text: &str, want: &str| {
            let (v, msg): (Value, String) = lua
                .load(format!("return require('json').decode({text})"))
                .eval()
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(v.is_nil(), "{text}");
            assert!(
                msg.starts_with("json: ") && msg.contains(want),
                "{text}: {msg}"
            );
        };
        fail("''", "EOF while parsing a value");
        fail("'{'", "EOF while parsing");
        fail("'[1,]'", "line 1 column 4");
        fail("'{\"a\" 1}'", "expected `:`");
        fail("'nulx'", "expected ident");
        fail("'1 2'", "trailing characters");
        fail("'NaN'", "expected value");
        fail("'\"\\255\"'", "invalid unicode");
        fail("'1e999'", "number out of range");
        fail(
            "string.rep('[', 128) .. string.rep(']', 128)",
            "recursion limit exceeded",
        );
        // 127 levels decode.
        let (v, _): (Value, Value) = lua
            .load("return require('json').decode(string.rep('[', 127) .. string.rep(']', 127))")
            .eval()
            .unwrap();
        assert!(matches!(v, Value::Table(_)));
        let e = eval::<Value>(&lua, "return json.decode(42)").unwrap_err();
        assert!(
            e.to_string()
                .contains("bad argument #1 to 'decode' (string expected, got number)"),
            "{e}"
        );
        let e = eval::<Value>(&lua, "return json.decode('1', {keep_nulls = 1})").unwrap_err();
        assert!(
            e.to_string().contains("'keep_nulls' must be a boolean"),
            "{e}"
        );
    }

    #[test]
    fn memory_limits_fail_cleanly() {
        let lua = lua();
        let big = format!("[{}1]", "1,".repeat(200_000));
        lua.globals().set("BIG", big).unwrap();
        let _ = lua.set_memory_limit(lua.used_memory() + 100_000);
        let e = eval::<Value>(&lua, "return json.decode(BIG)").unwrap_err();
        assert!(e.to_string().contains("not enough memory"), "{e}");
    }
}
