//! JavaScript in conf: the transforms, conditions and (later) scheduled
//! scripts that identity engineers write for mappings, run by QuickJS.
//!
//! A reconciliation run may evaluate one transform per record per property,
//! millions of times, so scripts are compiled once into functions and then
//! only called. Wren's contract is that a script's result is the value of its
//! last expression statement (eval semantics, e.g. `var x = source.a; x + 1;`);
//! [`rewrite`] turns the script's tail into a `return` so the compiled
//! function keeps that contract. Shapes the rewrite is unsure of run through
//! `eval` inside the compiled function instead: exact, but reparsed per call.
//!
//! QuickJS (through rquickjs) rather than boa: it implements ES2020
//! completely, is fast (a compiled call costs a fraction of a microsecond),
//! and rquickjs exposes a per-runtime memory limit and an interrupt handler,
//! which is what lets an admin's typo (`while (true) {}`) fail one record
//! instead of wedging a reconciliation worker.
//!
//! Sandbox: only ECMAScript built-ins plus `console`. No QuickJS `std`/`os`
//! modules and no module loader are installed, so there is no file, network,
//! process or `import`/`require` access.

mod rewrite;

use rewrite::Rewrite;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::function::{Args, Rest};
use rquickjs::{Array, Coerced, Context, Ctx, Function, Object, Persistent, Runtime, Type, Value};

/// Why a script could not be loaded, compiled or run. Variants about a script
/// name it, because the admin reading the log has to find it in conf.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{script}: script type {kind:?} is not supported (only \"text/javascript\")")]
    UnsupportedType { script: String, kind: String },
    #[error("{script}: {message}")]
    Invalid { script: String, message: String },
    #[error("{script}: cannot read {}: {source}", path.display())]
    File {
        script: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{script}: cannot compile{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Compile {
        script: String,
        message: String,
        line: Option<u32>,
    },
    #[error("{script}: {message}")]
    Runtime { script: String, message: String },
    #[error("{script}: stopped after running for more than {limit:?}")]
    Timeout { script: String, limit: Duration },
    #[error("{script}: canceled (idmd is stopping)")]
    Canceled { script: String },
    #[error("{script}: out of memory (the script engine's limit was reached)")]
    OutOfMemory { script: String },
    #[error("binding {name:?} is not a plain JavaScript identifier")]
    InvalidBinding { name: String },
    #[error("compiled script id does not belong to this engine")]
    UnknownScript,
    #[error("a shared binding does not belong to this engine")]
    ForeignBinding,
    #[error("script engine: {0}")]
    Engine(String),
}

/// A script declaration from conf; only `text/javascript` is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSource {
    /// Where the script came from, for error messages, e.g.
    /// `csvEmployee_managedUser.properties[4].transform`.
    pub name: String,
    pub code: String,
}

impl ScriptSource {
    /// Parses `{"type": "text/javascript", "source": "…"}` or
    /// `{"type": "text/javascript", "file": "script/x.js"}`, the file being
    /// relative to `conf_dir`. Wren also knows Groovy; we refuse it by name
    /// rather than fail later with a baffling JavaScript syntax error.
    pub fn from_json(
        name: &str,
        value: &serde_json::Value,
        conf_dir: &Path,
    ) -> Result<Self, ScriptError> {
        let invalid = |message: String| ScriptError::Invalid {
            script: name.to_owned(),
            message,
        };
        let Some(object) = value.as_object() else {
            return Err(invalid(format!(
                "a script must be an object like {{\"type\": \"text/javascript\", \"source\": \"…\"}}, not {value}"
            )));
        };
        let kind = match object.get("type") {
            Some(serde_json::Value::String(kind)) => kind,
            Some(other) => return Err(invalid(format!("\"type\" must be a string, not {other}"))),
            None => return Err(invalid("missing \"type\" (use \"text/javascript\")".into())),
        };
        if kind != "text/javascript" {
            return Err(ScriptError::UnsupportedType {
                script: name.to_owned(),
                kind: kind.clone(),
            });
        }
        match (object.get("source"), object.get("file")) {
            (Some(_), Some(_)) => Err(invalid(
                "has both \"source\" and \"file\"; give exactly one".into(),
            )),
            (Some(serde_json::Value::String(code)), None) => Ok(ScriptSource {
                name: name.to_owned(),
                code: code.clone(),
            }),
            (None, Some(serde_json::Value::String(file))) => {
                let path = crate::config::resolve_path(conf_dir, file);
                let code = std::fs::read_to_string(&path).map_err(|source| ScriptError::File {
                    script: name.to_owned(),
                    path: path.clone(),
                    source,
                })?;
                Ok(ScriptSource {
                    name: format!("{name} ({file})"),
                    code,
                })
            }
            (Some(other), None) => {
                Err(invalid(format!("\"source\" must be a string, not {other}")))
            }
            (None, Some(other)) => Err(invalid(format!("\"file\" must be a string, not {other}"))),
            (None, None) => Err(invalid(
                "needs \"source\" (the code) or \"file\" (a path relative to the conf directory)"
                    .into(),
            )),
        }
    }
}

/// Resource limits of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Per evaluation: long enough for any sane transform, short enough
    /// that a runaway loop costs one record rather than the run.
    pub time: Duration,
    /// For the whole runtime (all compiled scripts and their garbage);
    /// 0 means unlimited.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(1),
            memory_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A script compiled by one [`ScriptEngine`]; only valid with that engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompiledId {
    engine: u64,
    index: usize,
}

/// A value bound to a script's parameter.
#[derive(Clone, Copy)]
pub enum Binding<'a> {
    /// Converted to JavaScript for the call.
    Json(&'a serde_json::Value),
    /// Converted once by [`ScriptEngine::with_shared`].
    Shared(&'a Shared),
}

/// A JSON value converted to JavaScript once, for several calls on the
/// engine that made it (see [`ScriptEngine::with_shared`]).
pub struct Shared {
    engine: u64,
    value: Persistent<Value<'static>>,
}

/// Tells engines apart so that an id is never used with the wrong one.
static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// How a script is turned into a function.
enum Plan {
    /// The body returns the completion value itself (see [`rewrite`]).
    Direct(String),
    /// The body `eval`s the original text: exact, reparsed on every call.
    Eval(String),
}

struct Compiled {
    name: Rc<str>,
    plan: Plan,
    /// One function per set of binding names (normally just one), because
    /// bindings are the function's parameters.
    variants: Vec<(Vec<String>, Persistent<Function<'static>>)>,
}

/// One QuickJS runtime and context. Not `Send` (QuickJS is single-threaded):
/// each reconciliation worker owns one and compiles its scripts into it.
///
/// Globals a script creates (sloppy-mode assignments to undeclared names)
/// persist within the engine; bindings and `var`/`let` declarations do not,
/// because each call gets fresh parameters and a fresh function scope.
pub struct ScriptEngine {
    // Fields drop in order: the compiled functions must be released before
    // the runtime is freed (QuickJS asserts that no object outlives it).
    scripts: Vec<Compiled>,
    context: Context,
    runtime: Runtime,
    limits: Limits,
    id: u64,
    deadline: Rc<Cell<Option<Instant>>>,
    interrupted: Rc<Cell<bool>>,
    /// Set from another thread to stop the script in hand (shutdown).
    cancel: Rc<RefCell<Arc<AtomicBool>>>,
    /// The interrupt handler stopped a script because of `cancel`.
    canceled: Rc<Cell<bool>>,
    current: Rc<RefCell<Rc<str>>>,
}

impl ScriptEngine {
    pub fn new(limits: Limits) -> Result<Self, ScriptError> {
        let engine_error = |e: rquickjs::Error| ScriptError::Engine(e.to_string());
        let runtime = Runtime::new().map_err(engine_error)?;
        runtime.set_memory_limit(limits.memory_bytes);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let interrupted = Rc::new(Cell::new(false));
        let cancel: Rc<RefCell<Arc<AtomicBool>>> = Rc::default();
        let canceled = Rc::new(Cell::new(false));
        {
            let deadline = deadline.clone();
            let interrupted = interrupted.clone();
            let (cancel, canceled) = (cancel.clone(), canceled.clone());
            runtime.set_interrupt_handler(Some(Box::new(move || {
                if cancel.borrow().load(Ordering::Relaxed) {
                    canceled.set(true);
                    return true;
                }
                let expired = deadline.get().is_some_and(|at| Instant::now() >= at);
                if expired {
                    interrupted.set(true);
                }
                expired
            })));
        }
        let context = Context::full(&runtime).map_err(engine_error)?;
        let current: Rc<RefCell<Rc<str>>> = Rc::new(RefCell::new(Rc::from("")));
        context
            .with(|ctx| install_console(&ctx, &current))
            .map_err(engine_error)?;
        Ok(ScriptEngine {
            scripts: Vec::new(),
            context,
            runtime,
            limits,
            id: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed),
            deadline,
            interrupted,
            cancel,
            canceled,
            current,
        })
    }

    /// A flag another thread sets to stop the script running now (and any
    /// later one) with [`ScriptError::Canceled`]: how a scheduled script is
    /// cancelled at shutdown, under the same interrupt handler as the deadline.
    pub fn set_cancel(&mut self, cancel: Arc<AtomicBool>) {
        self.cancel.replace(cancel);
    }

    /// Gives scripts a global object `name` whose `methods` call back into
    /// Rust with their arguments as JSON; an `Err` is thrown in the script as
    /// an Error with that message. (Scheduled scripts get `idm.read` and
    /// `idm.query` this way.)
    pub fn install_host(
        &mut self,
        name: &str,
        methods: &[&'static str],
        call: HostCall,
    ) -> Result<(), ScriptError> {
        self.context
            .with(|ctx| install_host(&ctx, name, methods, &call))
            .map_err(|e| ScriptError::Engine(e.to_string()))
    }

    /// Compiles the script once; a syntax error names the script, the
    /// message and, when QuickJS gives one, the line.
    pub fn compile(&mut self, script: &ScriptSource) -> Result<CompiledId, ScriptError> {
        let name: Rc<str> = Rc::from(script.name.as_str());
        // The rewrite is a heuristic: if QuickJS rejects its output, the
        // original text decides, run through `eval`.
        let direct = match rewrite::completion_body(&script.code) {
            Rewrite::Body(body) => {
                let plan = Plan::Direct(body);
                self.build(&name, &plan, &[]).ok().map(|f| (plan, f))
            }
            Rewrite::TopLevelReturn { line } => {
                return Err(ScriptError::Compile {
                    script: script.name.clone(),
                    message: "SyntaxError: return not in a function".into(),
                    line: Some(line),
                });
            }
            Rewrite::Unsure => None,
        };
        let (plan, function) = match direct {
            Some(direct) => direct,
            None => self.eval_plan(&name, &script.code)?,
        };
        Ok(self.add(name, plan, function))
    }

    fn eval_plan(
        &self,
        name: &Rc<str>,
        code: &str,
    ) -> Result<(Plan, Persistent<Function<'static>>), ScriptError> {
        self.check_syntax(name, code)?;
        let plan = Plan::Eval(code.to_owned());
        let function = self.build(name, &plan, &[])?;
        Ok((plan, function))
    }

    fn add(
        &mut self,
        name: Rc<str>,
        plan: Plan,
        function: Persistent<Function<'static>>,
    ) -> CompiledId {
        self.scripts.push(Compiled {
            name,
            plan,
            variants: vec![(Vec::new(), function)],
        });
        CompiledId {
            engine: self.id,
            index: self.scripts.len() - 1,
        }
    }

    /// The script's name as given at compile time.
    pub fn name(&self, id: CompiledId) -> Option<&str> {
        self.script(id).ok().map(|compiled| &*compiled.name)
    }

    /// Runs a compiled script with named JSON bindings (e.g. `source`,
    /// `target`) as its parameters and returns its completion value as JSON
    /// (`undefined` becomes `null`).
    pub fn eval(
        &mut self,
        id: CompiledId,
        bindings: &[(&str, &serde_json::Value)],
    ) -> Result<serde_json::Value, ScriptError> {
        let bindings: Vec<(&str, Binding<'_>)> = bindings
            .iter()
            .map(|(name, value)| (*name, Binding::Json(value)))
            .collect();
        self.eval_bound(id, &bindings)
    }

    /// Runs `run` with `value` converted to JavaScript once, for the calls
    /// it makes to bind as [`Binding::Shared`]: a record's property scripts
    /// all see one `source` object, as in Wren (a script that changes it
    /// changes it for the scripts after it), and a record is converted once
    /// rather than once a script.
    pub fn with_shared<R>(
        &mut self,
        value: &serde_json::Value,
        run: impl FnOnce(&mut Self, &Shared) -> R,
    ) -> Result<R, ScriptError> {
        let converted = self.context.with(|ctx| {
            to_js(&ctx, value)
                .map(|js| Persistent::save(&ctx, js))
                .map_err(|e| Failure::caught(&ctx, e))
        });
        let shared = Shared {
            engine: self.id,
            value: converted.map_err(|failure| self.failure("(bindings)", failure))?,
        };
        // `shared` is dropped here, before the engine can be: QuickJS
        // asserts that no value outlives its runtime.
        Ok(run(self, &shared))
    }

    /// [`eval`](Self::eval) with bindings that may be shared values.
    pub fn eval_bound(
        &mut self,
        id: CompiledId,
        bindings: &[(&str, Binding<'_>)],
    ) -> Result<serde_json::Value, ScriptError> {
        if bindings
            .iter()
            .any(|(_, b)| matches!(b, Binding::Shared(s) if s.engine != self.id))
        {
            return Err(ScriptError::ForeignBinding);
        }
        let function = self.function(id, bindings)?;
        let name = self.script(id)?.name.clone();
        self.current.replace(name.clone());
        let limit = self.limits.time;
        self.interrupted.set(false);
        self.deadline.set(Some(Instant::now() + limit));
        let (interrupted, canceled) = (&self.interrupted, &self.canceled);
        let outcome = self
            .context
            .with(|ctx| -> Result<serde_json::Value, Failure> {
                let call = || -> rquickjs::Result<Value> {
                    let function = function.restore(&ctx)?;
                    let mut args = Args::new(ctx.clone(), bindings.len());
                    // A value bound under two names (`source` and `object`)
                    // is converted once: both names see the same JS object.
                    let mut converted: Vec<(&serde_json::Value, Value)> =
                        Vec::with_capacity(bindings.len());
                    for (_, binding) in bindings {
                        let value = match binding {
                            Binding::Json(value) => value,
                            Binding::Shared(shared) => {
                                args.push_arg(shared.value.clone().restore(&ctx)?)?;
                                continue;
                            }
                        };
                        let js = match converted
                            .iter()
                            .find(|(seen, _)| std::ptr::eq(*seen, *value))
                        {
                            Some((_, js)) => js.clone(),
                            None => {
                                let js = to_js(&ctx, value)?;
                                converted.push((value, js.clone()));
                                js
                            }
                        };
                        args.push_arg(js)?;
                    }
                    function.call_arg(args)
                };
                let result = call().map_err(|e| Failure::caught(&ctx, e))?;
                // Promise jobs (`then` callbacks) run now, under the same
                // deadline, rather than piling up in the runtime. A job fails
                // only on what scripts cannot catch (time, memory); its
                // exception is left pending in the context.
                let mut ran_jobs = false;
                while !interrupted.get() && !canceled.get() && ctx.execute_pending_job() {
                    ran_jobs = true;
                }
                if ran_jobs {
                    let leftover = ctx.catch();
                    if leftover.is_error() {
                        return Err(Failure::thrown(&ctx, leftover));
                    }
                }
                to_json(&ctx, &result).map_err(|e| Failure::caught(&ctx, e))
            });
        self.deadline.set(None);
        if self.canceled.replace(false) {
            self.interrupted.set(false);
            return Err(ScriptError::Canceled {
                script: name.to_string(),
            });
        }
        // A deadline that passed while promise jobs ran fails the call even
        // though its own result was already there.
        if self.interrupted.replace(false) {
            return Err(ScriptError::Timeout {
                script: name.to_string(),
                limit,
            });
        }
        outcome.map_err(|failure| self.failure(&name, failure))
    }

    /// Whether the script runs as a plain compiled function (no `eval`).
    #[cfg(test)]
    fn is_direct(&self, id: CompiledId) -> bool {
        self.script(id)
            .is_ok_and(|compiled| matches!(compiled.plan, Plan::Direct(_)))
    }

    /// Compiles through `eval` regardless: the reference the rewrite is
    /// checked against.
    #[cfg(test)]
    fn compile_as_eval(&mut self, script: &ScriptSource) -> Result<CompiledId, ScriptError> {
        let name: Rc<str> = Rc::from(script.name.as_str());
        let (plan, function) = self.eval_plan(&name, &script.code)?;
        Ok(self.add(name, plan, function))
    }

    fn script(&self, id: CompiledId) -> Result<&Compiled, ScriptError> {
        if id.engine != self.id {
            return Err(ScriptError::UnknownScript);
        }
        self.scripts.get(id.index).ok_or(ScriptError::UnknownScript)
    }

    /// The function for this set of binding names, compiled on first use.
    fn function(
        &mut self,
        id: CompiledId,
        bindings: &[(&str, Binding<'_>)],
    ) -> Result<Persistent<Function<'static>>, ScriptError> {
        let compiled = self.script(id)?;
        let same = |names: &[String]| {
            names.len() == bindings.len() && names.iter().zip(bindings).all(|(n, (b, _))| n == b)
        };
        if let Some((_, function)) = compiled.variants.iter().find(|(names, _)| same(names)) {
            return Ok(function.clone());
        }
        let names: Vec<&str> = bindings.iter().map(|(name, _)| *name).collect();
        let function = self.build(&compiled.name, &compiled.plan, &names)?;
        if let Some(compiled) = self.scripts.get_mut(id.index) {
            compiled.variants.push((
                names.iter().map(|n| (*n).to_owned()).collect(),
                function.clone(),
            ));
        }
        Ok(function)
    }

    /// Compiles the function for `plan` taking `names` as parameters.
    fn build(
        &self,
        name: &Rc<str>,
        plan: &Plan,
        names: &[&str],
    ) -> Result<Persistent<Function<'static>>, ScriptError> {
        for (i, binding) in names.iter().enumerate() {
            if !is_identifier(binding) || names.get(..i).is_some_and(|seen| seen.contains(binding))
            {
                return Err(ScriptError::InvalidBinding {
                    name: (*binding).to_owned(),
                });
            }
        }
        let params = names.join(", ");
        self.interrupted.set(false);
        self.deadline.set(Some(Instant::now() + self.limits.time));
        let built = self.context.with(|ctx| -> Result<_, Failure> {
            let function: Function = match plan {
                // The body starts on the wrapper's first line so that line
                // numbers in errors match the script.
                Plan::Direct(body) => eval_sloppy(&ctx, format!("(function({params}) {{{body}\n}})"))
                    .map_err(|e| Failure::caught(&ctx, e))?,
                Plan::Eval(code) => {
                    let factory: Function = eval_sloppy(
                        &ctx,
                        format!(
                            "(function (__idmScriptCode) {{ return function ({params}) {{ return eval(__idmScriptCode); }}; }})"
                        ),
                    )
                    .map_err(|e| Failure::caught(&ctx, e))?;
                    factory
                        .call((code.as_str(),))
                        .map_err(|e| Failure::caught(&ctx, e))?
                }
            };
            Ok(Persistent::save(&ctx, function))
        });
        self.deadline.set(None);
        built.map_err(|failure| match failure {
            Failure::Thrown { message, line } => ScriptError::Compile {
                script: name.to_string(),
                message,
                line,
            },
            other => self.failure(name, other),
        })
    }

    /// Parses the original text as a function body without running it, to
    /// report syntax errors against the script rather than the rewrite.
    fn check_syntax(&self, name: &Rc<str>, code: &str) -> Result<(), ScriptError> {
        let checked = self.context.with(|ctx| {
            eval_sloppy::<Function>(&ctx, format!("(function () {{{code}\n}})"))
                .map(|_| ())
                .map_err(|e| Failure::caught(&ctx, e))
        });
        checked.map_err(|failure| match failure {
            Failure::Thrown { message, line } => ScriptError::Compile {
                script: name.to_string(),
                message,
                line,
            },
            other => self.failure(name, other),
        })
    }

    fn failure(&self, name: &str, failure: Failure) -> ScriptError {
        let script = name.to_owned();
        if self.canceled.replace(false) {
            self.interrupted.set(false);
            return ScriptError::Canceled { script };
        }
        if self.interrupted.replace(false) {
            return ScriptError::Timeout {
                script,
                limit: self.limits.time,
            };
        }
        match failure {
            Failure::OutOfMemory => {
                // Free the garbage of the failed call now, so the next call
                // starts with the whole budget.
                self.runtime.run_gc();
                ScriptError::OutOfMemory { script }
            }
            Failure::Thrown { message, line } => ScriptError::Runtime {
                script,
                message: match line {
                    Some(line) => format!("{message} (line {line})"),
                    None => message,
                },
            },
            Failure::Engine(message) => ScriptError::Runtime { script, message },
        }
    }
}

/// What went wrong inside the JavaScript context, taken out of it.
enum Failure {
    Thrown { message: String, line: Option<u32> },
    OutOfMemory,
    Engine(String),
}

impl From<rquickjs::Error> for Failure {
    fn from(e: rquickjs::Error) -> Self {
        match e {
            rquickjs::Error::Allocation => Failure::OutOfMemory,
            other => Failure::Engine(other.to_string()),
        }
    }
}

impl Failure {
    /// Takes the pending exception out of the context when `e` says there
    /// is one.
    fn caught(ctx: &Ctx<'_>, e: rquickjs::Error) -> Self {
        if !e.is_exception() {
            return e.into();
        }
        Failure::thrown(ctx, ctx.catch())
    }

    fn thrown<'js>(ctx: &Ctx<'js>, thrown: Value<'js>) -> Self {
        let Some(object) = thrown.as_object() else {
            return Failure::Thrown {
                message: describe(ctx, &thrown),
                line: None,
            };
        };
        if !thrown.is_error() {
            return Failure::Thrown {
                message: describe(ctx, &thrown),
                line: None,
            };
        }
        let text = |key: &str| {
            object
                .get::<_, Option<Coerced<String>>>(key)
                .ok()
                .flatten()
                .map(|c| c.0)
        };
        let kind = text("name").unwrap_or_else(|| "Error".into());
        let message = text("message").unwrap_or_default();
        if kind == "InternalError" && message == "out of memory" {
            return Failure::OutOfMemory;
        }
        let line = text("stack").as_deref().and_then(stack_line);
        Failure::Thrown {
            message: format!("{kind}: {message}"),
            line,
        }
    }
}

/// The script line of the innermost frame that has one, from QuickJS's
/// stack text (`    at f (eval_script:3:7)`; `<input>` is code run through
/// `eval`). Best effort: QuickJS does not record a position for every
/// operation and then reports the wrapper function's own start (1:1).
fn stack_line(stack: &str) -> Option<u32> {
    stack.lines().find_map(|frame| {
        let (file, position) = ["<input>:", "eval_script:"]
            .into_iter()
            .find_map(|file| Some((file, frame.split_once(file)?.1)))?;
        let mut numbers = position
            .split(|c: char| !c.is_ascii_digit())
            .map(str::parse::<u32>);
        let (Some(Ok(line)), Some(Ok(column))) = (numbers.next(), numbers.next()) else {
            return None;
        };
        let wrapper_start = file == "eval_script:" && line == 1 && column == 1;
        (!wrapper_start).then_some(line)
    })
}

/// Scripts run in sloppy mode, as Wren's Rhino ran them: engineers' scripts
/// assign undeclared variables and would fail under strict mode.
fn eval_sloppy<'js, V: rquickjs::FromJs<'js>>(
    ctx: &Ctx<'js>,
    source: String,
) -> rquickjs::Result<V> {
    let mut options = EvalOptions::default();
    options.strict = false;
    ctx.eval_with_options(source, options)
}

/// Converts a binding. Integers that fit stay QuickJS integers so that
/// `source.count + 1` stays integral on the way back.
fn to_js<'js>(ctx: &Ctx<'js>, value: &serde_json::Value) -> rquickjs::Result<Value<'js>> {
    Ok(match value {
        serde_json::Value::Null => Value::new_null(ctx.clone()),
        serde_json::Value::Bool(b) => Value::new_bool(ctx.clone(), *b),
        serde_json::Value::Number(n) => match n.as_i64().map(i32::try_from) {
            Some(Ok(i)) => Value::new_int(ctx.clone(), i),
            _ => Value::new_number(ctx.clone(), n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        serde_json::Value::Array(items) => {
            let array = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                array.set(i, to_js(ctx, item)?)?;
            }
            array.into_value()
        }
        serde_json::Value::Object(map) => {
            let object = Object::new(ctx.clone())?;
            for (key, item) in map {
                object.set(key.as_str(), to_js(ctx, item)?)?;
            }
            object.into_value()
        }
    })
}

/// Converts a result as `JSON.stringify` would (`toJSON`, dropped functions,
/// `Date` as ISO text), except that `undefined` becomes `null`.
fn to_json<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> rquickjs::Result<serde_json::Value> {
    Ok(match value.type_of() {
        Type::Uninitialized | Type::Undefined | Type::Null => serde_json::Value::Null,
        Type::Bool => serde_json::Value::Bool(value.as_bool().unwrap_or_default()),
        Type::Int => value.as_int().unwrap_or_default().into(),
        Type::Float => number(value.as_float().unwrap_or(f64::NAN)),
        Type::String => match value.as_string() {
            Some(s) => serde_json::Value::String(s.to_string()?),
            None => serde_json::Value::Null,
        },
        Type::Symbol | Type::Function | Type::Constructor | Type::Module | Type::Unknown => {
            serde_json::Value::Null
        }
        Type::BigInt => {
            return Err(rquickjs::Exception::throw_type(
                ctx,
                "a BigInt result cannot be converted to JSON",
            ));
        }
        Type::Array | Type::Object | Type::Exception | Type::Promise => {
            match ctx.json_stringify(value.clone())? {
                Some(text) => serde_json::from_str(&text.to_string()?).map_err(|e| {
                    rquickjs::Exception::throw_type(ctx, &format!("result is not JSON: {e}"))
                })?,
                None => serde_json::Value::Null,
            }
        }
    })
}

/// Integral doubles become JSON integers (`2 * 3.5` is `7`, not `7.0`);
/// NaN and infinities become `null`, as in `JSON.stringify`.
fn number(f: f64) -> serde_json::Value {
    const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;
    if f.is_finite() && f.fract() == 0.0 && f.abs() < I64_BOUND {
        let i = f as i64;
        return i.into();
    }
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Text of a thrown non-Error value or a console argument.
fn describe<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> String {
    if let Some(s) = value.as_string() {
        return s.to_string().unwrap_or_default();
    }
    let plain_object = value.is_object() && !value.is_function() && !value.is_error();
    if plain_object && let Ok(Some(json)) = ctx.json_stringify(value.clone()) {
        return json.to_string().unwrap_or_default();
    }
    value
        .get::<Coerced<String>>()
        .map(|c| c.0)
        .unwrap_or_else(|_| format!("[{}]", value.type_name()))
}

/// The Rust side of a host object: `(method, arguments) → result`.
pub type HostCall = Rc<dyn Fn(&str, Vec<serde_json::Value>) -> Result<serde_json::Value, String>>;

fn install_host<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    methods: &[&'static str],
    call: &HostCall,
) -> rquickjs::Result<()> {
    let host = Object::new(ctx.clone())?;
    for method in methods {
        let call = Rc::clone(call);
        let method: &'static str = method;
        let function = Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, args: Rest<Value<'js>>| -> rquickjs::Result<Value<'js>> {
                let args = args
                    .0
                    .iter()
                    .map(|arg| to_json(&ctx, arg))
                    .collect::<rquickjs::Result<Vec<_>>>()?;
                match call(method, args) {
                    Ok(result) => to_js(&ctx, &result),
                    Err(message) => Err(rquickjs::Exception::throw_message(&ctx, &message)),
                }
            },
        )?
        .with_name(method)?;
        host.set(method, function)?;
    }
    ctx.globals().set(name, host)
}

/// `console.log` and friends write through `tracing` (target `script`), so
/// scheduled scripts' output lands in idmd's log with the script's name.
fn install_console<'js>(ctx: &Ctx<'js>, current: &Rc<RefCell<Rc<str>>>) -> rquickjs::Result<()> {
    let console = Object::new(ctx.clone())?;
    for level in ["log", "info", "warn", "error", "debug"] {
        let current = current.clone();
        let function = Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<Value<'js>>| {
            let text = args
                .0
                .iter()
                .map(|arg| describe(&ctx, arg))
                .collect::<Vec<_>>()
                .join(" ");
            let script = current.borrow().clone();
            match level {
                "warn" => tracing::warn!(target: "script", script = %script, "{text}"),
                "error" => tracing::error!(target: "script", script = %script, "{text}"),
                "debug" => tracing::debug!(target: "script", script = %script, "{text}"),
                _ => tracing::info!(target: "script", script = %script, "{text}"),
            }
        })?
        .with_name(level)?;
        console.set(level, function)?;
    }
    ctx.globals().set("console", console)
}

/// Binding names become parameter names, so they must be identifiers (and
/// never code).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !RESERVED.contains(&name)
}

const RESERVED: &[&str] = &[
    "arguments",
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "eval",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "function",
    "if",
    "implements",
    "import",
    "in",
    "instanceof",
    "interface",
    "let",
    "new",
    "null",
    "package",
    "private",
    "protected",
    "public",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
