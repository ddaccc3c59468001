//! What users of llama-cli expect from the command line: its flags, Ctrl-C, closed pipes, the
//! chat REPL's commands and input, the default model's search path, exit codes, and output that
//! ends its line before the stats. On the tiny model (byte-level tokenizer: id = byte), CPU.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tinfer-fid-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny(name: &str, overrides: serde_json::Value) -> String {
    tiny_model_dir(&tmp(name), overrides).to_str().unwrap().to_string()
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tinfer"));
    c.args(args)
        .env_remove("TINFER_MODEL")
        .env_remove("TINFER_DEVICE")
        .env_remove("TINFER_DATA_DIR");
    c
}

/// `tinfer args` with stdin, stdout and stderr piped.
fn spawn(args: &[&str]) -> Child {
    cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = spawn(args);
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// stdout of a run that must succeed, and its stderr.
fn ok(args: &[&str]) -> (String, String) {
    let out = run(args, b"");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "tinfer {args:?} failed: {err}");
    assert!(!err.contains("panicked"), "{err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

/// A run that must fail with `code` and mention every needle on stderr.
fn fails(args: &[&str], code: i32, needles: &[&str]) {
    assert_failed(args, &run(args, b""), code, needles);
}

/// A child whose stdout and stderr are collected by threads as they arrive.
struct Live {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Live {
    fn spawn(args: &[&str]) -> Live {
        let mut child = spawn(args);
        let collect = |mut r: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(vec![]));
            let b = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            buf
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Live { child, out, err }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).to_string()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).to_string()
    }

    /// Wait until `cond(stdout, stderr)` holds (panics after 60 s with both).
    fn wait_for(&self, what: &str, cond: impl Fn(&str, &str) -> bool) {
        let start = Instant::now();
        while !cond(&self.stdout(), &self.stderr()) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "waited 60 s for {what}; stdout: {:?}\nstderr: {}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn sigint(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        assert_eq!(rc, 0);
    }

    /// Wait for the exit (panics after 30 s); returns the status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50)); // let the readers drain
                return s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("tinfer did not exit within 30 s; stderr: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A long generation on the CPU: a context of 128K positions, end tokens ignored.
fn long_generate(model: &str) -> Vec<String> {
    [
        "generate",
        "--model",
        model,
        "--device",
        "cpu",
        "-p",
        "Once",
        "-n",
        "-1",
        "--ignore-eos",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn ctrl_c_stops_generate_prints_stats_and_exits_130() {
    let m = tiny("sigint", json!({"max_position_embeddings": 131072}));
    let args = long_generate(&m);
    let mut live = Live::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    live.wait_for("generated text", |out, _| out.len() > 20);
    live.sigint();
    let status = live.wait();
    let (out, err) = (live.stdout(), live.stderr());
    assert_eq!(status.code(), Some(130), "exit code after Ctrl-C; stderr: {err}");
    assert!(out.ends_with('\n'), "the text ends its line before the stats: {out:?}");
    assert!(
        err.contains("stop: Cancelled"),
        "the stats line says why it stopped: {err}"
    );
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
}

/// An interactive chat on a long-context tiny model, replying (without end) to "hello".
fn chat_replying(name: &str) -> Live {
    let m = tiny(name, json!({"max_position_embeddings": 131072}));
    let mut live = Live::spawn(&["chat", "--model", &m, "--device", "cpu", "-n", "-1", "--ignore-eos"]);
    live.wait_for("the prompt", |_, err| err.contains("> "));
    live.send("hello\n");
    live.wait_for("a reply", |out, _| out.len() > 20);
    live
}

#[test]
fn ctrl_c_in_chat_stops_the_reply_then_exits_at_the_prompt() {
    let mut live = chat_replying("sigint-chat");
    live.sigint();
    live.wait_for("the reply to stop and a new prompt", |_, err| {
        err.contains("[interrupted") && err.trim_end().ends_with('>')
    });
    assert!(
        live.child.try_wait().unwrap().is_none(),
        "the first Ctrl-C must not end the chat"
    );
    // The conversation goes on: the next turn is answered.
    let before = live.stdout().len();
    live.send("again\n");
    live.wait_for("a second reply", |out, _| out.len() > before + 20);
    live.sigint();
    live.wait_for("the second reply to stop", |_, err| {
        err.matches("[interrupted").count() == 2
    });
    live.wait_for("the prompt", |_, err| err.trim_end().ends_with('>'));
    live.sigint();
    let status = live.wait();
    assert_eq!(
        status.code(),
        Some(130),
        "Ctrl-C at the prompt exits; stderr: {}",
        live.stderr()
    );
    assert!(!live.stderr().contains("panicked"));
}

#[test]
fn a_quick_second_ctrl_c_during_a_reply_exits() {
    let mut live = chat_replying("sigint-twice");
    live.sigint();
    // 20 ms apart: two signals sent at once may reach the process as one
    std::thread::sleep(Duration::from_millis(20));
    live.sigint();
    let status = live.wait();
    assert_eq!(
        status.code(),
        Some(130),
        "two Ctrl-C in a row exit; stderr: {}",
        live.stderr()
    );
}

#[test]
fn ctrl_c_while_loading_or_at_the_first_prompt_exits_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let m = tiny("sigint-early", json!({}));
    for delay_ms in [0, 30, 150] {
        let mut live = Live::spawn(&["chat", "--model", &m, "--device", "cpu"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        live.sigint();
        let status = live.wait();
        // before the handler is installed SIGINT's default action ends it; after, exit 130
        assert!(
            status.code() == Some(130) || status.signal() == Some(libc::SIGINT),
            "{delay_ms} ms: {status:?}; stderr: {}",
            live.stderr()
        );
    }
}

#[test]
fn a_closed_pipe_ends_the_process_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let m = tiny("pipe", json!({"max_position_embeddings": 131072}));
    // generate: the reader goes away after the first bytes; tinfer must stop, not keep going.
    let args = long_generate(&m);
    let mut child = cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "generate kept running into a closed pipe"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGPIPE),
        "ended by SIGPIPE like cat; stderr: {err}"
    );
    assert!(!err.contains("Broken pipe") && !err.contains("panicked"), "{err}");
    // info, tokenize: the first line read, the rest not
    for args in [
        vec!["info", "--model", &m, "--device", "cpu"],
        vec!["tokenize", "--model", &m, "--pieces"],
    ] {
        let mut child = cmd(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        drop(child.stdout.take()); // closed before anything is written
        let _ = stdin.write_all(&b"many words ".repeat(10_000));
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
        assert!(
            !err.contains("Broken pipe") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn llama_cli_flags() {
    let m = tiny("flags", json!({}));
    let base = ["generate", "--model", &m, "--device", "cpu", "-p", "The cat"];
    let with = |extra: &[&str]| ok(&[&base[..], extra].concat());
    // -s / --seed, --temp / --temperature, -n / --max-tokens
    let (a, _) = with(&["-s", "5", "--temp", "0.8", "-n", "12"]);
    let (b, _) = with(&["--seed", "5", "--temperature", "0.8", "--max-tokens", "12"]);
    assert_eq!(a, b);
    // -t is threads, not the temperature: the text stays greedy
    let (greedy, _) = with(&["-n", "12"]);
    let (threads, _) = with(&["-n", "12", "-t", "1"]);
    assert_eq!(greedy, threads, "-t 1 sets the CPU threads and leaves the text alone");
    fails(&[&base[..], &["-t", "0"]].concat(), 1, &["--threads"]);
    // -f / --file
    let d = tmp("flags-file");
    let from_file = |name: &str| {
        let path = d.join(name);
        ok(&[
            "generate",
            "--model",
            &m,
            "--device",
            "cpu",
            "-f",
            path.to_str().unwrap(),
            "-n",
            "12",
        ])
    };
    std::fs::write(d.join("p.txt"), "The cat").unwrap();
    let (text, _) = from_file("p.txt");
    assert_eq!(text, greedy);
    // -n -1: until the context is full; -c limits the context
    let (_, err) = with(&["-n", "-1", "-c", "40"]);
    assert!(
        err.contains("generated: 34 tokens") && err.contains("stop: ContextFull"),
        "{err}"
    );
    fails(&[&base[..], &["-c", "100000"]].concat(), 1, &["--ctx-size", "512"]);
    fails(
        &[
            "generate",
            "--model",
            &m,
            "--device",
            "cpu",
            "-c",
            "4",
            "-p",
            "longer than four",
        ],
        2,
        &["context holds 4"],
    );
    // --seed -1: a fresh seed, reported
    let (_, err) = with(&["--seed", "-1", "--temp", "1", "-n", "4"]);
    assert!(err.contains("| seed "), "{err}");
    // --stop: the text cut before the first occurrence, the stop string not printed
    let (long, _) = with(&["-n", "40"]);
    let text = long.trim_end_matches('\n');
    let stop: String = text.chars().skip(6).take(2).collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let (stopped, err) = with(&["-n", "40", "--stop", &stop, "--stop", "never-seen"]);
    assert_eq!(stopped, format!("{cut}\n"), "--stop {stop:?}");
    assert!(err.contains("stop: StopString"), "{err}");
    // stdout ends with a newline before the stats; a one-token run has no decode rate
    let (one, err) = with(&["-n", "1"]);
    assert!(one.ends_with('\n') && one.chars().count() == 2, "{one:?}");
    assert!(err.contains("generated: 1 token | decode: no steps"), "{err}");
    let (_, err) = with(&["-n", "2"]);
    assert!(
        err.contains("generated: 2 tokens | decode: ") && err.contains("tok/s over 1 step |"),
        "{err}"
    );
    // -t -1: one thread per core, as llama-cli's default
    let (threads, _) = with(&["-n", "12", "-t", "-1"]);
    assert_eq!(threads, greedy);
    fails(&[&base[..], &["--stop", ""]].concat(), 1, &["must not be empty"]);
    // values that start with '-' are values; a flag given twice: the last one counts
    let (dash, _) = ok(&["generate", "--model", &m, "--device", "cpu", "-p", "- item", "-n", "4"]);
    let (dash_eq, _) = ok(&["generate", "--model", &m, "--device", "cpu", "-p=- item", "-n", "4"]);
    assert_eq!(dash, dash_eq);
    ok(&[
        &base[..],
        &["-n", "3", "--stop", "--", "--temp", "0.9", "--temperature", "0"],
    ]
    .concat());
    assert_eq!(with(&["-n", "12", "--temp", "0.9", "--temp", "0"]).0, greedy);
    ok(&["tokenize", "--model", &m, "-5"]);
    ok(&[
        "chat", "--model", &m, "--device", "cpu", "--system", "-terse", "-p", "hi", "-n", "2",
    ]);
    // seeds up to 2^64 - 1
    let (_, err) = with(&["-n", "2", "--temp", "1", "-s", "18446744073709551615"]);
    assert!(err.contains("| seed 18446744073709551615"), "{err}");
    fails(
        &[&base[..], &["-s", "18446744073709551616"]].concat(),
        1,
        &["not a seed"],
    );
    // -p reads llama-cli's escapes (\n is a newline) unless --no-escape; a file is taken as it is
    let shown = |extra: &[&str]| {
        let args = [
            "generate",
            "--model",
            &m,
            "--device",
            "cpu",
            "-p",
            r"a\nb",
            "-n",
            "1",
            "--verbose-prompt",
        ];
        ok(&[&args[..], extra].concat()).1
    };
    let err = shown(&[]);
    assert!(err.contains("prompt (3 tokens):\na\nb\n"), "{err}");
    let err = shown(&["--no-escape"]);
    assert!(err.contains("prompt (4 tokens):\na\\nb\n"), "{err}");
    // a prompt piped in (echo adds a newline) or read from a file ending in one: the same as -p
    let piped = run(
        &["generate", "--model", &m, "--device", "cpu", "-n", "12"],
        b"The cat\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout),
        greedy,
        "stdin's final newline is dropped"
    );
    std::fs::write(d.join("nl.txt"), "The cat\n").unwrap();
    let (text_nl, _) = from_file("nl.txt");
    assert_eq!(text_nl, greedy, "a prompt file's final newline is dropped");
    let (_, err) = with(&["-n", "12"]);
    assert!(err.contains("decode: ") && err.contains("tok/s over 11 steps"), "{err}");
}

#[test]
fn ignore_eos_never_samples_the_end_tokens() {
    // Make the greedy first token the end token: plain generate then stops at once.
    let m = tiny("eos-probe", json!({}));
    let first_byte = |prompt: &str| {
        let (first, _) = ok(&["generate", "--model", &m, "--device", "cpu", "-p", prompt, "-n", "1"]);
        first.as_bytes()[0]
    };
    // byte-level tokenizer: a printable ASCII token's id is its byte
    let (prompt, eos) = [
        "The cat",
        "a",
        "Hello",
        "xyz",
        "12",
        "q",
        "Zz",
        "#",
        "long words here",
        "!?",
    ]
    .into_iter()
    .map(|p| (p, first_byte(p)))
    .find(|(_, b)| b.is_ascii_graphic())
    .expect("a prompt whose greedy first token is printable");
    let eos = eos as u32;
    let m = tiny("eos", json!({"eos_token_id": eos}));
    let base = ["generate", "--model", &m, "--device", "cpu", "-p", prompt, "-n", "30"];
    let (out, err) = ok(&base);
    assert_eq!(out, "", "greedy stops at the end token at once: {err}");
    assert!(err.contains("stop: Eos"), "{err}");
    for extra in [&["--ignore-eos"][..], &["--ignore-eos", "--temp", "1.5", "-s", "3"]] {
        let (out, err) = ok(&[&base[..], extra].concat());
        assert!(
            err.contains("generated: 30 tokens") && err.contains("stop: MaxTokens"),
            "{extra:?}: {err}"
        );
        assert!(
            !out.as_bytes().contains(&(eos as u8)),
            "{extra:?}: the end token was sampled: {out:?}"
        );
    }
}

#[test]
fn inputs_are_checked_before_the_model_loads_and_usage_errors_exit_1() {
    // The model path does not exist: the prompt's problem must be found first.
    let none = "/nonexistent/model";
    fails(&["generate", "-m", none, "-p", ""], 2, &["prompt is empty"]);
    fails(&["chat", "-m", none, "-p", ""], 2, &["prompt is empty"]);
    fails(
        &["generate", "-m", none, "-f", "/nonexistent/prompt.txt"],
        2,
        &["prompt file"],
    );
    for (flag, value, needle) in [
        ("--temperature", "-1", "--temperature"),
        ("--temp", "nan", "--temperature"),
        ("--top-p", "1.5", "--top-p"),
        ("--min-p", "-0.1", "--min-p"),
        ("--top-k", "-3", "--top-k"),
        ("--repeat-penalty", "0", "--repeat-penalty"),
        ("--seed", "-2", "--seed"),
        ("-n", "-2", "-n"),
        ("--n-seq", "0", "--n-seq"),
    ] {
        fails(&["generate", "-m", none, "-p", "x", flag, value], 1, &[needle]);
    }
}

#[test]
fn verbose_prompt_shows_what_the_model_receives() {
    let m = tiny("verbose", json!({}));
    let (_, err) = ok(&[
        "chat",
        "--model",
        &m,
        "--device",
        "cpu",
        "-p",
        "hi",
        "-n",
        "2",
        "--verbose-prompt",
    ]);
    let rendered = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
    assert!(
        err.contains(&format!("prompt ({} tokens):\n{rendered}", rendered.len())),
        "{err}"
    );
    assert!(
        err.contains(&format!("{:>8} -> \"h\"", b'h')),
        "each token with its text: {err}"
    );
}

#[test]
fn tokenize_pieces_and_no_special() {
    let Some(dir) = smollm2_dir() else { return };
    let m = dir.to_str().unwrap();
    let (ids, _) = ok(&["tokenize", "--model", m, "<|im_start|>Hi"]);
    assert_eq!(ids, "1 26843\n", "<|im_start|> is the special token 1");
    let (plain, _) = ok(&["tokenize", "--model", m, "--no-special", "<|im_start|>Hi"]);
    assert!(
        !plain.split_whitespace().any(|t| t == "1"),
        "--no-special reads it as text: {plain}"
    );
    assert!(plain.split_whitespace().count() > 3, "{plain}");
    let (pieces, _) = ok(&["tokenize", "--model", m, "--pieces", "<|im_start|>Hi there"]);
    assert_eq!(pieces, "1\t\"<|im_start|>\"\n26843\t\"Hi\"\n665\t\" there\"\n");
    let (json, _) = ok(&["tokenize", "--model", m, "--pieces", "--json", "Hi"]);
    assert_eq!(json.trim(), r#"[{"id":26843,"piece":"Hi"}]"#);
    // the GPU options are not offered where they do nothing
    let (help, _) = ok(&["tokenize", "--help"]);
    assert!(!help.contains("--device") && !help.contains("--kv"), "{help}");
}

/// Run a piped chat session; returns (stdout, stderr).
fn chat_session(model: &str, extra: &[&str], input: &[u8]) -> (String, String) {
    let out = run(
        &[&["chat", "--model", model, "--device", "cpu", "-n", "8"], extra].concat(),
        input,
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    (String::from_utf8_lossy(&out.stdout).to_string(), err)
}

#[test]
fn chat_repl_commands_and_input() {
    let m = tiny("repl", json!({}));
    let input = b"/help\n/nonsense\n//slash\nfirst \\\nsecond\n\"\"\"\nline one\nline two\n\"\"\"\n\xff\xfe bad\n/reset\nafter\n";
    let (_, err) = chat_session(&m, &["--verbose-prompt"], input);
    assert!(
        err.contains("/reset") && err.contains("/exit"),
        "/help lists the commands: {err}"
    );
    assert!(err.contains("unknown command /nonsense"), "{err}");
    assert!(
        !err.contains("user\n/nonsense"),
        "an unknown command is not sent: {err}"
    );
    assert!(err.contains("user\n/slash<|im_end|>"), "//text sends /text: {err}");
    assert!(
        err.contains("user\nfirst \nsecond<|im_end|>"),
        "a trailing \\ continues the line: {err}"
    );
    assert!(
        err.contains("user\nline one\nline two<|im_end|>"),
        "a \"\"\" block: {err}"
    );
    assert!(err.contains("not valid UTF-8 (byte 0xff"), "{err}");
    assert!(err.contains("conversation cleared"), "/reset confirms: {err}");
    // after /reset the prompt holds only the new message
    let last = err.rsplit("prompt (").next().unwrap();
    assert!(
        last.contains("user\nafter<|im_end|>") && !last.contains("line one"),
        "{last}"
    );
    assert_eq!(err.matches("| stop:").count(), 4, "four messages were sent: {err}");
    assert!(
        err.ends_with("> \n"),
        "after Ctrl-D (EOF) the shell starts on a new line: {err:?}"
    );
}

#[test]
fn a_full_conversation_drops_its_oldest_turns_or_says_it_is_full() {
    let m = tiny("shift", json!({"max_position_embeddings": 160}));
    let turn = |i: usize| format!("message number {i} with some words\n");
    let input: String = (0..6).map(turn).collect();
    let (_, err) = chat_session(&m, &["--system", "be brief", "--verbose-prompt"], input.as_bytes());
    assert_eq!(err.matches("| stop:").count(), 6, "every turn is answered: {err}");
    assert!(
        err.contains("dropped the 2 oldest message(s) after the system message"),
        "{err}"
    );
    let last = err.rsplit("prompt (").next().unwrap();
    assert!(
        last.contains("system\nbe brief") && !last.contains("number 0"),
        "the system message is kept, the oldest dropped: {last}"
    );
    let (_, err) = chat_session(&m, &["--no-context-shift"], input.as_bytes());
    assert!(
        err.contains("the conversation is full") && err.contains("/reset"),
        "{err}"
    );
    // a message that cannot fit alone
    let long = format!("{}\n", "x".repeat(200));
    let (_, err) = chat_session(&m, &[], long.as_bytes());
    assert!(err.contains("context holds 160: shorten it"), "{err}");
}

#[test]
fn the_default_model_is_found_from_anywhere() {
    // A data directory holding a model under the default name wins over models/ in the
    // checkout (the tiny model's byte-level ids tell which was used).
    let data = tmp("data");
    let m = tiny_model_dir(&data.join("models").join("smollm2-135m-instruct"), json!({}));
    assert!(m.exists());
    let elsewhere = tmp("cwd");
    // `tokenize ab` from another directory with this data directory: the tiny model's ids
    let tokenize_ab = |extra: &[&str]| {
        let out = cmd(&[&["tokenize"], extra, &["ab"]].concat())
            .env("TINFER_DATA_DIR", &data)
            .current_dir(&elsewhere)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{extra:?}: {err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "97 98\n", "{extra:?}");
    };
    tokenize_ab(&[]);
    // A fetched model's name: the file under that name in the data directory.
    std::fs::write(
        data.join("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        tiny_gguf_bytes(),
    )
    .unwrap();
    tokenize_ab(&["--model", "qwen2.5-coder-0.5b-instruct"]);
    // Nothing anywhere: the error names the paths tried.
    if !Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/smollm2-135m-instruct")
        .exists()
    {
        let out = cmd(&["tokenize", "ab"])
            .env("TINFER_DATA_DIR", elsewhere.join("none"))
            .current_dir(&elsewhere)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("none/models/smollm2-135m-instruct") && err.contains("fetch-model.sh"),
            "{err}"
        );
    }
}
