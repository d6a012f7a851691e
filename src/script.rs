//! Loading and running the user's script: a fresh Lua 5.4 state with the standard libraries and
//! the `flu` module, `package.path` covering the script's directory and the shipped `lua/`
//! directory, `arg` and `...` set as the standalone `lua` sets them. The script either returns
//! its operations table or calls `flu.main(argv, fs)` itself.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table, Value};

use crate::daemon::Reporter;
use crate::flu::{self, Host};
use crate::mount::{self, Target};
use crate::options::MountOptions;

/// Everything needed to run one script.
pub struct Job {
    pub script: PathBuf,
    pub mountpoint: PathBuf,
    pub script_args: Vec<String>,
    pub options: MountOptions,
}

/// The shipped `lua/` directory: `$FLUFS_LUA_DIR`, `<prefix>/share/flufs/lua` next to the
/// binary, or the source tree this binary was built from.
pub fn shipped_lua_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FLUFS_LUA_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(prefix) = exe.parent().and_then(Path::parent)
    {
        let d = prefix.join("share/flufs/lua");
        if d.is_dir() {
            return Some(d);
        }
    }
    let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/lua"));
    d.is_dir().then_some(d)
}

fn lua_quote(p: &Path) -> String {
    p.to_string_lossy().replace(';', "")
}

fn setup_package_path(lua: &Lua, script_dir: &Path) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let old: String = package.get("path")?;
    let mut parts = vec![
        format!("{}/?.lua", lua_quote(script_dir)),
        format!("{}/?/init.lua", lua_quote(script_dir)),
    ];
    if let Some(d) = shipped_lua_dir() {
        parts.push(format!("{}/?.lua", lua_quote(&d)));
        parts.push(format!("{}/?/init.lua", lua_quote(&d)));
    }
    parts.push(old);
    package.set("path", parts.join(";"))
}

/// Read the script, blanking a `#!` first line (line numbers stay right).
fn read_source(path: &Path) -> Result<Vec<u8>, String> {
    let mut src =
        std::fs::read(path).map_err(|e| format!("cannot read script {}: {e}", path.display()))?;
    if src.starts_with(b"#") {
        let end = src.iter().position(|&b| b == b'\n').unwrap_or(src.len());
        src.drain(..end);
    }
    Ok(src)
}

const RUNNER: &str = r#"
local chunk = ...
return xpcall(chunk, debug.traceback, select(2, ...))
"#;

/// Run the job to completion: load, mount, serve, unmount. `Err` carries a one-line reason.
pub fn run(job: Job, reporter: Rc<RefCell<Reporter>>) -> Result<(), String> {
    // Scripts are the user's own programs: give them the full standard library, like `lua`.
    let lua = unsafe { Lua::unsafe_new_with(StdLib::ALL, LuaOptions::default()) };
    let ctx = flu::new_ctx();
    if let Some(limit) = job.options.lua_memory {
        let _ = lua.set_memory_limit(usize::try_from(limit).unwrap_or(usize::MAX));
    }

    let default_fsname = job
        .script
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flufs".into());
    let target = Rc::new(Target {
        mountpoint: job.mountpoint.clone(),
        default_fsname,
    });
    let cli = Rc::new(job.options.clone());

    let serve = {
        let target = target.clone();
        let cli = cli.clone();
        let reporter = reporter.clone();
        let ctx = ctx.clone();
        Rc::new(
            move |lua: &Lua, opts: &MountOptions, fs: Table| -> Result<(), String> {
                let mut ready = || reporter.borrow_mut().ready();
                let merged = opts.merged_under(&cli);
                mount::serve(lua, &fs, &merged, &target, ctx.clone(), &mut ready)
            },
        )
    };

    let main_serve = serve.clone();
    let host = Rc::new(Host {
        main: Rc::new(move |lua, argv, fs| {
            // argv[1] is the program name (Flu uses it as fsname); the rest is FUSE's command line.
            let (mut opts, _positional) = MountOptions::parse_args(argv.get(1..).unwrap_or(&[]))?;
            if opts.fsname.is_none() {
                opts.fsname = argv.first().cloned();
            }
            main_serve(lua, &opts, fs)
        }),
        main_result: RefCell::new(None),
        ctx: ctx.clone(),
    });
    flu::register(&lua, host.clone()).map_err(|e| format!("cannot set up the flu module: {e}"))?;
    crate::gett::register(&lua).map_err(|e| format!("cannot set up the gett module: {e}"))?;
    crate::json::register(&lua).map_err(|e| format!("cannot set up the json module: {e}"))?;
    crate::http::register(&lua).map_err(|e| format!("cannot set up the http module: {e}"))?;
    crate::finalizers::guard(&lua, job.options.op_timeout)
        .map_err(|e| format!("cannot set up the finalizer guard: {e}"))?;

    let script_dir = job
        .script
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    setup_package_path(&lua, &script_dir).map_err(|e| format!("cannot set package.path: {e}"))?;

    let mut args: Vec<String> = vec![job.mountpoint.to_string_lossy().into_owned()];
    args.extend(job.script_args.iter().cloned());
    let arg = lua.create_table().map_err(|e| e.to_string())?;
    let _ = arg.raw_set(-1, "flufs");
    let _ = arg.raw_set(0, job.script.to_string_lossy().into_owned());
    for (i, a) in args.iter().enumerate() {
        let _ = arg.raw_set(i as i64 + 1, a.as_str());
    }
    let _ = lua.globals().raw_set("arg", arg);

    let src = read_source(&job.script)?;
    let chunk: Function = lua
        .load(&src)
        .set_name(format!("@{}", job.script.display()))
        .into_function()
        .map_err(|e| format!("cannot load script: {}", one_line(&e.to_string())))?;
    let runner: Function = lua
        .load(RUNNER)
        .set_name("=flufs")
        .into_function()
        .map_err(|e| e.to_string())?;
    let mut call_args = MultiValue::new();
    call_args.push_back(Value::Function(chunk));
    for a in &args {
        call_args.push_back(Value::String(
            lua.create_string(a).map_err(|e| e.to_string())?,
        ));
    }
    // The chunk runs as a coroutine too, so that it may call gett/http (which suspend) itself.
    let mut out = crate::runtime::block_on(runner.call_async::<MultiValue>(call_args))
        .map_err(|e| format!("script failed: {e}"))?;
    let ok = matches!(out.pop_front(), Some(Value::Boolean(true)));
    if !ok {
        let msg = match out.pop_front() {
            Some(Value::String(s)) => s.to_string_lossy(),
            // A non-string error (`error(flu.errno.EEXIST)`, a table): as `tostring` shows it.
            Some(v) => v
                .to_string()
                .unwrap_or_else(|_| format!("a {}", v.type_name())),
            None => "unknown error".into(),
        };
        return Err(format!("script failed: {msg}"));
    }
    if let Some(r) = host.main_result.borrow_mut().take() {
        return r;
    }
    match out.pop_front() {
        Some(Value::Table(fs)) => serve(&lua, &MountOptions::default(), fs),
        other => Err(format!(
            "script {} must return a table of operations or call flu.main(argv, fs) (it returned {})",
            job.script.display(),
            other.as_ref().map_or("nothing", |v| v.type_name())
        )),
    }
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}
