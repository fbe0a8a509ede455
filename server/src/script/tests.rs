use std::io::Write;
use std::sync::{Arc, Mutex};

use super::*;
use serde_json::json;

fn engine() -> ScriptEngine {
    ScriptEngine::new(Limits::default()).unwrap()
}

fn source(code: &str) -> ScriptSource {
    ScriptSource {
        name: "test.transform".into(),
        code: code.into(),
    }
}

fn run(
    code: &str,
    bindings: &[(&str, &serde_json::Value)],
) -> Result<serde_json::Value, ScriptError> {
    let mut engine = engine();
    let id = engine.compile(&source(code))?;
    engine.eval(id, bindings)
}

fn jon() -> serde_json::Value {
    json!({"uid": "123", "firstName": "Jon", "lastName": "Snow"})
}

#[test]
fn cookbook_transforms_run_unchanged() {
    let jon = jon();
    let bindings = [("source", &jon)];
    assert_eq!(
        run("source.lastName.toLowerCase() + source.uid;", &bindings).unwrap(),
        json!("snow123")
    );
    assert_eq!(
        run(
            "source.firstName.toLowerCase() + '.' + source.lastName.toLowerCase() + '@example.com';",
            &bindings
        )
        .unwrap(),
        json!("jon.snow@example.com")
    );
    let zoe = json!({"uid": "7", "firstName": "Zoë", "lastName": "Ångström"});
    assert_eq!(
        run(
            "source.firstName.toLowerCase() + ' ' + source.lastName.toUpperCase()",
            &[("source", &zoe)]
        )
        .unwrap(),
        json!("zoë ÅNGSTRÖM")
    );
    // UTF-16 length, as JavaScript counts: the emoji is a surrogate pair.
    assert_eq!(run("'naïve ☃ 😀'.length", &[]).unwrap(), json!(10));
}

#[test]
fn multi_statement_scripts_yield_their_completion_value() {
    let mut engine = engine();
    let data = json!({"a": 41, "b": "", "list": [1, 2, 3]});
    let cases: &[(&str, serde_json::Value, bool)] = &[
        ("var x = source.a; x + 1;", json!(42), true),
        ("var x = source.a\nx * 2", json!(82), true),
        ("if (source.a) { 'y' } else { 'n' }", json!("y"), true),
        ("if (source.b) { 'y' } else { 'n' }", json!("n"), true),
        ("if (source.b) { 'y' }", json!(null), true),
        (
            "if (source.b) { 'first' }\nelse if (source.a > 40) {\n  var t = 't';\n  t + source.a\n} else { 'last' }",
            json!("t41"),
            true,
        ),
        (
            "function twice(v) { return v * 2 }\ntwice(source.a)",
            json!(82),
            true,
        ),
        (
            "var s = 0;\nsource.list.forEach(function (v) { s += v; });\ns",
            json!(6),
            true,
        ),
        ("{ let q = 2; q * 3 }", json!(6), true),
        (
            "if (!source.a) { throw new Error('no a') } else { source.a }",
            json!(41),
            true,
        ),
        // Shapes the rewrite leaves to `eval`: still exact.
        (
            "var s = 0; for (var i = 0; i < 4; i++) { s += i } s",
            json!(6),
            false,
        ),
        ("1; var y = 2;", json!(1), false),
        (
            "var r; switch (source.a) { case 41: r = 'yes'; break; default: r = 'no' } r",
            json!("yes"),
            false,
        ),
        (
            "try { null.x } catch (e) { 'caught' }",
            json!("caught"),
            false,
        ),
        ("if (source.a) 'y'; else 'n';", json!("y"), false),
    ];
    let deep = format!("{}source.a{}", "{".repeat(100), "}".repeat(100));
    let cases = [cases, &[(deep.as_str(), json!(41), false)]].concat();
    for (code, expected, direct) in &cases {
        let id = engine.compile(&source(code)).unwrap();
        assert_eq!(
            &engine.eval(id, &[("source", &data)]).unwrap(),
            expected,
            "{code}"
        );
        assert_eq!(engine.is_direct(id), *direct, "plan of {code}");
    }
}

/// The rewrite must never change a result: every script is also run through
/// plain `eval`, the reference semantics.
#[test]
fn rewritten_scripts_agree_with_eval() {
    let mut engine = engine();
    let data = json!({"a": 3, "s": "x;y}z", "flag": false, "items": [{"n": 1}, {"n": 2}]});
    let scripts = [
        "source.a",
        "source.a;",
        "source.a;;;",
        "",
        "   // only a comment",
        "source.a\n+ 1",
        "source.a\n-1",
        "var a = source.a\n++a",
        "var a = source.a\n(function () { return 1 })",
        "var f = function () { return 7 }\nf()",
        "var o = {}\nsource.s.split(';').length",
        "'a;b'.length",
        "\"}\" + source.s",
        "`${source.a + 1};${'}'}` + `;`",
        "/;}/.test(source.s)",
        "var re = /[/;]/g; source.s.replace(re, '-')",
        "source.a /* ; } */ * 2 // trailing ; }",
        "source.items.map(x => x.n).reduce((a, b) => a + b, 0)",
        "source.items.map(x => { return x.n * 10 })",
        "var x = source.a > 2 ? 'big' : 'small'\nx",
        "source.flag || 'default'",
        "source.a, source.s",
        "typeof nothingHere",
        "var d = new Date(0); d.toISOString()",
        "if (source.a > 2) { if (source.flag) { 1 } else { 2 } } else { 3 }",
        "if (source.a > 2) { var k = 1 } else { 2 }",
        "if (source.a > 2) {} else { 2 }",
        "label: { 1 }",
        "var i = 0; while (i < 3) i++; i",
        "do { source.a++ } while (source.a < 10)\nsource.a",
        "({a: 1}).a",
        "[1, 2, 3]\n.map(v => v + 1)",
        "var y = source.a\n/2/1",
        "source.s\n`tag`",
        "let z = 1; const w = 2; z + w",
        "class K { m() { return source.a } }\nnew K().m()",
        "async function af() { return 1 }\nsource.a",
        "'use strict'; source.a",
        "var get = 5\nget",
        "var of = 5\nof",
        "void 0",
        "{}",
        "{a: 1}",
        "(function () {})",
        "source.a\nif (source.a) { 'then' }",
        "x = 1\n;[x, 2]",
        "source.a\n++\nsource.a",
        "var o = {a: 1}\n['a'].length",
        "var q = source.a\n.toString()",
        "var q = source.a\n? 1 : 2",
        "var q = source.a\n?.toString()",
        "var f = () => {}\nf()",
        "var g = function () { return 5 }\n(function () { return 6 })",
        "class A { v() { return 8 } }\nnew A().v()",
        "function h() {}\n(1)",
        "var u = {}\n/2/1",
        "if (source.a) {}\n/a/.test('a')",
        "var await = 4\nawait",
        "foo:\nsource.a",
        "if (source.a) { {x: 1} }",
        "var n = 0x1F + 1e-3 + .5 + 1_000\nn",
        "var esc = '\\'; esc + ';'",
        "source.s.replace(/\\}/g, '{')",
        "/* a */ source.a /* b */",
        "var t = `a\n${source.a}\nb`\nt",
    ];
    for code in scripts {
        let script = source(code);
        let reference = engine
            .compile_as_eval(&script)
            .and_then(|id| engine.eval(id, &[("source", &data)]));
        let actual = engine
            .compile(&script)
            .and_then(|id| engine.eval(id, &[("source", &data)]));
        assert_eq!(
            reference.is_ok(),
            actual.is_ok(),
            "{code:?}: eval gave {reference:?}, compiled gave {actual:?}"
        );
        match (&reference, &actual) {
            (Ok(expected), Ok(got)) => assert_eq!(got, expected, "{code:?}"),
            (Err(expected), Err(got)) => assert_eq!(
                std::mem::discriminant(expected),
                std::mem::discriminant(got),
                "{code:?}: {expected} vs {got}"
            ),
            _ => {}
        }
    }
}

#[test]
fn results_convert_to_json_faithfully() {
    let data =
        json!({"n": 41, "big": 12_345_678_901_i64, "f": 1.5, "o": {"z": 1, "a": [true, null]}});
    let b = [("source", &data)];
    assert_eq!(run("source.n + 1", &b).unwrap(), json!(42));
    assert!(run("source.n + 1", &b).unwrap().is_i64());
    assert_eq!(
        run("source.big + 1", &b).unwrap(),
        json!(12_345_678_902_i64)
    );
    assert!(run("source.big + 1", &b).unwrap().is_i64());
    assert_eq!(run("2 * 3.5", &b).unwrap(), json!(7));
    assert!(run("2 * 3.5", &b).unwrap().is_i64());
    assert_eq!(run("7 / 2", &b).unwrap(), json!(3.5));
    assert_eq!(run("source.f", &b).unwrap(), json!(1.5));
    assert_eq!(run("0 / 0", &b).unwrap(), json!(null));
    assert_eq!(run("true", &b).unwrap(), json!(true));
    assert_eq!(run("null", &b).unwrap(), json!(null));
    assert_eq!(run("undefined", &b).unwrap(), json!(null));
    assert_eq!(run("source.missing", &b).unwrap(), json!(null));
    assert_eq!(
        run("source.o", &b).unwrap(),
        json!({"z": 1, "a": [true, null]})
    );
    assert_eq!(
        run(
            "({b: [1, 'x', 2.5, {c: null}], a: undefined, f: function () {}})",
            &b
        )
        .unwrap(),
        json!({"b": [1, "x", 2.5, {"c": null}]})
    );
    // Key order survives the round trip.
    let keys = run(
        "Object.keys(source.o).concat(Object.keys({y: 1, b: 2}))",
        &b,
    )
    .unwrap();
    assert_eq!(keys, json!(["z", "a", "y", "b"]));
    assert_eq!(
        run("new Date(0)", &b).unwrap(),
        json!("1970-01-01T00:00:00.000Z")
    );
    assert_eq!(run("[]", &b).unwrap(), json!([]));
    assert_eq!(run("'caf\\u00e9'", &b).unwrap(), json!("café"));
}

#[test]
fn one_compiled_script_serves_many_records() {
    let mut engine = engine();
    let id = engine
        .compile(&source("source.lastName.toLowerCase() + source.uid;"))
        .unwrap();
    assert!(engine.is_direct(id));
    let records: Vec<serde_json::Value> = (0..10_000)
        .map(|i| json!({"uid": i.to_string(), "firstName": "Jon", "lastName": format!("Snow{i}")}))
        .collect();
    let started = Instant::now();
    for (i, record) in records.iter().enumerate() {
        let got = engine.eval(id, &[("source", record)]).unwrap();
        assert_eq!(got, json!(format!("snow{i}{i}")));
    }
    let per_call = started.elapsed() / 10_000;
    println!("compiled once, per call (incl. JSON conversion): {per_call:?}");

    let no_bindings = engine.compile(&source("'a' + 'b'")).unwrap();
    let started = Instant::now();
    for _ in 0..10_000 {
        engine.eval(no_bindings, &[]).unwrap();
    }
    println!("no bindings, per call: {:?}", started.elapsed() / 10_000);

    let ignores_source = engine.compile(&source("0")).unwrap();
    let started = Instant::now();
    for record in &records {
        engine.eval(ignores_source, &[("source", record)]).unwrap();
    }
    println!(
        "of which passing the record in, per call: {:?}",
        started.elapsed() / 10_000
    );

    let slow = engine
        .compile_as_eval(&source("source.lastName.toLowerCase() + source.uid;"))
        .unwrap();
    let started = Instant::now();
    for record in records.iter().take(2_000) {
        engine.eval(slow, &[("source", record)]).unwrap();
    }
    println!(
        "through eval (reparsed each call), per call: {:?}",
        started.elapsed() / 2_000
    );
}

#[test]
fn bindings_do_not_leak_between_calls() {
    let mut engine = engine();
    let first = json!({"x": 1});
    let second = json!({"x": 2});
    let target = json!({"t": true});
    let mutate = engine
        .compile(&source("source.x = source.x * 10; source.x"))
        .unwrap();
    assert_eq!(
        engine.eval(mutate, &[("source", &first)]).unwrap(),
        json!(10)
    );
    assert_eq!(
        engine.eval(mutate, &[("source", &second)]).unwrap(),
        json!(20)
    );
    assert_eq!(
        engine.eval(mutate, &[("source", &first)]).unwrap(),
        json!(10)
    );

    let sees_target = engine.compile(&source("typeof target")).unwrap();
    assert_eq!(
        engine
            .eval(sees_target, &[("source", &first), ("target", &target)])
            .unwrap(),
        json!("object")
    );
    assert_eq!(
        engine.eval(sees_target, &[("source", &first)]).unwrap(),
        json!("undefined")
    );
    // Same script, bindings in another order: another compiled variant.
    let order = engine
        .compile(&source("source.x + (target ? 100 : 0)"))
        .unwrap();
    assert_eq!(
        engine
            .eval(order, &[("target", &target), ("source", &second)])
            .unwrap(),
        json!(102)
    );

    let declares = engine
        .compile(&source("var leaked = 1; let alsoLeaked = 2; leaked"))
        .unwrap();
    engine.eval(declares, &[]).unwrap();
    let probe = engine
        .compile(&source("typeof leaked + typeof alsoLeaked"))
        .unwrap();
    assert_eq!(
        engine.eval(probe, &[]).unwrap(),
        json!("undefinedundefined")
    );
    // Through eval too.
    let declares = engine
        .compile(&source("var leaked2 = 1; for (;;) { break } leaked2"))
        .unwrap();
    assert!(!engine.is_direct(declares));
    engine.eval(declares, &[]).unwrap();
    let probe = engine.compile(&source("typeof leaked2")).unwrap();
    assert_eq!(engine.eval(probe, &[]).unwrap(), json!("undefined"));
}

#[test]
fn binding_names_must_be_identifiers() {
    let mut engine = engine();
    let id = engine.compile(&source("1")).unwrap();
    let v = json!(1);
    for bad in ["a b", "x){", "", "1a", "this", "eval"] {
        assert!(
            matches!(
                engine.eval(id, &[(bad, &v)]),
                Err(ScriptError::InvalidBinding { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        engine.eval(id, &[("a", &v), ("a", &v)]),
        Err(ScriptError::InvalidBinding { .. })
    ));
    let other = engine.compile(&source("2")).unwrap();
    let mut second = ScriptEngine::new(Limits::default()).unwrap();
    assert!(matches!(
        second.eval(other, &[]),
        Err(ScriptError::UnknownScript)
    ));
}

/// A shared value is converted once and bound as the same object to every
/// call made in its scope; only its own engine takes it; a value too big
/// for the engine's memory is refused with the engine's error.
#[test]
fn a_shared_value_is_one_object_for_the_calls_in_its_scope() {
    let mut engine = engine();
    let mark = engine
        .compile(&source("source.n = (source.n || 0) + 1; source.n"))
        .unwrap();
    let same = engine.compile(&source("source === object")).unwrap();
    let record = json!({"uid": "1"});
    let counts = engine
        .with_shared(&record, |engine, shared| {
            let bound = [("source", Binding::Shared(shared))];
            let first = engine.eval_bound(mark, &bound).unwrap();
            let second = engine.eval_bound(mark, &bound).unwrap();
            let both = [
                ("source", Binding::Shared(shared)),
                ("object", Binding::Shared(shared)),
            ];
            (first, second, engine.eval_bound(same, &both).unwrap())
        })
        .unwrap();
    assert_eq!(counts, (json!(1), json!(2), json!(true)));
    assert_eq!(record, json!({"uid": "1"}), "the JSON is not changed");
    assert_eq!(
        engine.eval(mark, &[("source", &record)]).unwrap(),
        json!(1),
        "a JSON binding is a fresh object"
    );

    let mut other = ScriptEngine::new(Limits::default()).unwrap();
    let foreign = other
        .with_shared(&record, |_, shared| {
            engine.eval_bound(mark, &[("source", Binding::Shared(shared))])
        })
        .unwrap();
    assert!(
        matches!(foreign, Err(ScriptError::ForeignBinding)),
        "{foreign:?}"
    );

    let mut small = ScriptEngine::new(short_limits()).unwrap();
    let huge = json!(vec!["x".repeat(1024); 32 * 1024]);
    let refused = small.with_shared(&huge, |_, _| ());
    assert!(
        matches!(refused, Err(ScriptError::OutOfMemory { .. })),
        "{refused:?}"
    );
}

fn short_limits() -> Limits {
    Limits {
        time: Duration::from_millis(100),
        memory_bytes: 16 * 1024 * 1024,
    }
}

#[test]
fn runaway_loops_are_stopped_by_the_time_limit() {
    let mut engine = ScriptEngine::new(short_limits()).unwrap();
    let jon = jon();
    let ok = engine.compile(&source("source.uid + '!'")).unwrap();
    for code in [
        "while (true) {}",
        "try { while (true) {} } catch (e) { 'swallowed' }",
        "for (;;) { try { while (true) {} } finally { } }",
        "function f() { while (true) {} } f()",
        "new Promise(function (ok) { ok() }).then(function () { while (true) {} }); 1",
        "(function again() { Promise.resolve().then(again) })(); 1",
    ] {
        let id = engine.compile(&source(code)).unwrap();
        let started = Instant::now();
        let err = engine.eval(id, &[]).unwrap_err();
        assert!(
            matches!(&err, ScriptError::Timeout { script, limit }
                if script == "test.transform" && *limit == Duration::from_millis(100)),
            "{code}: {err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{code}");
        assert_eq!(engine.eval(ok, &[("source", &jon)]).unwrap(), json!("123!"));
    }
}

#[test]
fn a_running_script_is_canceled_from_another_thread_long_before_its_limit() {
    let mut engine = ScriptEngine::new(Limits {
        time: Duration::from_secs(300),
        memory_bytes: 0,
    })
    .unwrap();
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    engine.set_cancel(Arc::clone(&cancel));
    let id = engine
        .compile(&source("try { while (true) {} } catch (e) { 'swallowed' }"))
        .unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let canceller = {
        let cancel = Arc::clone(&cancel);
        std::thread::spawn(move || {
            started_rx.recv().unwrap();
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    started_tx.send(()).unwrap();
    let err = engine.eval(id, &[]).unwrap_err();
    canceller.join().unwrap();
    assert!(
        matches!(&err, ScriptError::Canceled { script } if script == "test.transform"),
        "{err:?}"
    );
    assert!(err.to_string().contains("idmd is stopping"), "{err}");
}

#[test]
fn memory_bombs_hit_the_memory_limit() {
    let mut engine = ScriptEngine::new(Limits {
        time: Duration::from_secs(10),
        memory_bytes: 16 * 1024 * 1024,
    })
    .unwrap();
    let jon = jon();
    let ok = engine.compile(&source("source.uid + '!'")).unwrap();
    for code in [
        "let a = []; while (true) a.push(new Array(1e6).fill(1));",
        "let s = 'x'; while (true) s = s + s;",
        "let o = {}; for (let i = 0; ; i++) o['k' + i] = i;",
    ] {
        let id = engine.compile(&source(code)).unwrap();
        let err = engine.eval(id, &[]).unwrap_err();
        assert!(
            matches!(&err, ScriptError::OutOfMemory { script } if script == "test.transform"),
            "{code}: {err:?}"
        );
        assert_eq!(engine.eval(ok, &[("source", &jon)]).unwrap(), json!("123!"));
    }
    // Deep recursion is a stack overflow, reported as a runtime error.
    let id = engine
        .compile(&source("function f(n) { return f(n + 1) + 1 } f(0)"))
        .unwrap();
    assert!(matches!(
        engine.eval(id, &[]),
        Err(ScriptError::Runtime { .. })
    ));
    assert_eq!(engine.eval(ok, &[("source", &jon)]).unwrap(), json!("123!"));
}

#[test]
fn errors_name_the_script() {
    let mut engine = engine();
    let named = ScriptSource {
        name: "csvEmployee_managedUser.properties[4].transform".into(),
        code: "var a = 1;\nthrow new Error(\"bad\")".into(),
    };
    let id = engine.compile(&named).unwrap();
    let err = engine.eval(id, &[]).unwrap_err();
    assert!(
        matches!(&err, ScriptError::Runtime { script, message }
        if script == &named.name && message.contains("bad")),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("csvEmployee_managedUser.properties[4].transform"),
        "{text}"
    );
    assert!(text.contains("bad") && text.contains("line 2"), "{text}");

    let thrown = run("throw 'plain'", &[]).unwrap_err();
    assert!(matches!(&thrown, ScriptError::Runtime { message, .. } if message == "plain"));
    let thrown = run("throw {code: 42}", &[]).unwrap_err();
    assert!(matches!(&thrown, ScriptError::Runtime { message, .. } if message == "{\"code\":42}"));
    let missing = run("source.uid", &[]).unwrap_err();
    assert!(missing.to_string().contains("ReferenceError"), "{missing}");

    let broken = ScriptSource {
        name: "mapping.condition".into(),
        code: "var x = 1;\n\nsource.uid +* 2".into(),
    };
    let err = engine.compile(&broken).unwrap_err();
    assert!(
        matches!(&err, ScriptError::Compile { script, message, line }
            if script == "mapping.condition" && message.contains("SyntaxError") && *line == Some(3)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("mapping.condition: cannot compile (line 3)"),
        "{err}"
    );
    for code in [
        "if (",
        "a b",
        "'unterminated",
        "}",
        "return 1",
        "var x = 1\nif (x) { return x }",
    ] {
        assert!(
            matches!(
                engine.compile(&source(code)),
                Err(ScriptError::Compile { .. })
            ),
            "{code}"
        );
    }
    // `return` inside functions is fine.
    assert_eq!(
        run(
            "[1, 2].map(function (v) { return v + 1 }).concat([3].map(v => { return v }))",
            &[]
        )
        .unwrap(),
        json!([2, 3, 3])
    );
}

#[test]
fn builtins_work_and_the_host_is_out_of_reach() {
    assert_eq!(
        run("typeof new Date().getTime()", &[]).unwrap(),
        json!("number")
    );
    assert_eq!(
        run("new Date() > new Date(2020, 0, 1)", &[]).unwrap(),
        json!(true)
    );
    assert_eq!(
        run("Math.max(1, 5, 3) + Math.floor(2.7)", &[]).unwrap(),
        json!(7)
    );
    assert_eq!(
        run("JSON.stringify(JSON.parse('{\"a\":[1,2]}'))", &[]).unwrap(),
        json!("{\"a\":[1,2]}")
    );
    assert_eq!(
        run("'a-b-c'.split('-').map(s => s.toUpperCase()).join('')", &[]).unwrap(),
        json!("ABC")
    );
    assert_eq!(
        run(
            "[typeof require, typeof std, typeof os, typeof process, typeof module, typeof fetch, typeof XMLHttpRequest]",
            &[]
        )
        .unwrap(),
        json!(vec!["undefined"; 7])
    );
    assert!(matches!(
        run("import fs from 'fs'; fs", &[]),
        Err(ScriptError::Compile { .. })
    ));
    let mut engine = engine();
    let import = engine
        .compile(&source(
            "globalThis.outcome = 'pending'; import('fs').then(() => outcome = 'loaded', e => outcome = 'refused'); 0",
        ))
        .unwrap();
    engine.eval(import, &[]).unwrap();
    let outcome = engine.compile(&source("outcome")).unwrap();
    assert_eq!(engine.eval(outcome, &[]).unwrap(), json!("refused"));
}

/// Collects what `tracing` writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn console_writes_to_tracing() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut engine = engine();
        let id = engine
            .compile(&ScriptSource {
                name: "schedule.reconcileEmployees".into(),
                code: "console.log('started', {n: 1}, [2], 3, undefined); console.warn('careful'); console.error(new Error('boom')); 5".into(),
            })
            .unwrap();
        assert_eq!(engine.eval(id, &[]).unwrap(), json!(5));
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("INFO script: started {\"n\":1} [2] 3 undefined"),
        "{text}"
    );
    assert!(
        text.contains("script=schedule.reconcileEmployees"),
        "{text}"
    );
    assert!(text.contains("WARN script: careful"), "{text}");
    assert!(text.contains("ERROR script: Error: boom"), "{text}");
}

#[test]
fn sources_are_read_from_conf() {
    let dir = std::env::temp_dir().join(format!("idm-script-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("script")).unwrap();
    std::fs::write(
        dir.join("script/mail.js"),
        "// mail\nsource.uid + '@example.com'\n",
    )
    .unwrap();

    let inline = ScriptSource::from_json(
        "m.properties[0].transform",
        &json!({"type": "text/javascript", "source": "source.uid"}),
        &dir,
    )
    .unwrap();
    assert_eq!(inline.code, "source.uid");
    assert_eq!(inline.name, "m.properties[0].transform");

    let file = ScriptSource::from_json(
        "m.properties[1].transform",
        &json!({"type": "text/javascript", "file": "script/mail.js"}),
        &dir,
    )
    .unwrap();
    assert!(
        file.name.contains("m.properties[1].transform") && file.name.contains("script/mail.js")
    );
    let mut engine = engine();
    let id = engine.compile(&file).unwrap();
    assert_eq!(
        engine.eval(id, &[("source", &jon())]).unwrap(),
        json!("123@example.com")
    );

    let missing_file = ScriptSource::from_json(
        "m.x",
        &json!({"type": "text/javascript", "file": "script/none.js"}),
        &dir,
    )
    .unwrap_err();
    assert!(matches!(missing_file, ScriptError::File { .. }));
    assert!(missing_file.to_string().contains("none.js"));

    let groovy = ScriptSource::from_json(
        "m.y",
        &json!({"type": "groovy", "source": "source.uid"}),
        &dir,
    )
    .unwrap_err();
    assert!(
        matches!(&groovy, ScriptError::UnsupportedType { script, kind } if script == "m.y" && kind == "groovy")
    );
    assert!(groovy.to_string().contains("groovy") && groovy.to_string().contains("m.y"));

    for bad in [
        json!({"type": "text/javascript"}),
        json!({"type": "text/javascript", "source": "1", "file": "x.js"}),
        json!({"type": "text/javascript", "source": 1}),
        json!({"source": "1"}),
        json!("source.uid"),
    ] {
        let err = ScriptSource::from_json("m.z", &bad, &dir).unwrap_err();
        assert!(
            matches!(&err, ScriptError::Invalid { script, .. } if script == "m.z"),
            "{bad}: {err:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
