//! `tinfer serve` (issue 21, first part): the server binary on a loopback port with the tiny
//! Llama fixture on the CPU, driven with plain HTTP/1.1: health, models, completions whole and
//! streamed (greedy text equal to `tinfer generate`), concurrent requests equal to lone ones,
//! stop strings, OpenAI-shaped errors (bad JSON, unsupported fields, a prompt past the context,
//! a missing API key), a client that disconnects mid-stream, and SIGTERM.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// A server on a free loopback port; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Self::start_on("cpu", extra)
    }

    fn start_on(device: &str, extra: &[&str]) -> Server {
        let model = fixtures().join("tiny-llama-gqa");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tinfer"))
            .args([
                "serve",
                "-m",
                model.to_str().unwrap(),
                "--device",
                device,
                "--port",
                "0",
                "-c",
                "128",
            ])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // keep reading stderr so the server never blocks on a full pipe
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = err.read_to_string(&mut sink);
        });
        let s = Server { child, port };
        let t0 = Instant::now();
        while s.get("/health").0 != 200 {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the server did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn request(&self, method: &str, path: &str, body: &str, headers: &[&str]) -> (u16, String) {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = vec![];
        c.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, body)
    }

    fn get(&self, path: &str) -> (u16, String) {
        match TcpStream::connect(("127.0.0.1", self.port)) {
            Ok(_) => self.request("GET", path, "", &[]),
            Err(_) => (0, String::new()),
        }
    }

    fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        let (status, text) = self.request("POST", path, &body.to_string(), &[]);
        (status, serde_json::from_str(&text).unwrap_or(Json::String(text)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_string)
        .collect()
}

fn generate_cli(prompt: &str, n: usize) -> String {
    let model = fixtures().join("tiny-llama-gqa");
    let out = Command::new(env!("CARGO_BIN_EXE_tinfer"))
        .args([
            "generate",
            "-m",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "-c",
            "128",
        ])
        .args(["-p", prompt, "-n", &n.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

#[test]
fn completions_equal_generate_whole_streamed_and_concurrent() {
    let s = Server::start(&["--parallel", "3"]);
    let (status, models) = s.post("/v1/models", &Json::Null);
    assert_eq!(status, 405, "{models}"); // GET only
    let (status, models) = s.get("/v1/models");
    assert_eq!(status, 200);
    let models: Json = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "tiny-llama-gqa");

    let req = serde_json::json!({"prompt": "Hello", "max_tokens": 12, "temperature": 0});
    let (status, r) = s.post("/v1/completions", &req);
    assert_eq!(status, 200, "{r}");
    let text = r["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(text, generate_cli("Hello", 12), "greedy text equals tinfer generate's");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 12);
    assert_eq!(r["object"], "text_completion");

    // streamed: the chunks add up to the same text; usage, then [DONE]
    let mut sreq = req.clone();
    sreq["stream"] = true.into();
    sreq["stream_options"] = serde_json::json!({"include_usage": true});
    let (status, body) = s.request("POST", "/v1/completions", &sreq.to_string(), &[]);
    assert_eq!(status, 200);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Json> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, text);
    assert_eq!(
        chunks.last().unwrap()["usage"]["total_tokens"],
        r["usage"]["total_tokens"]
    );

    // concurrent requests (more than --parallel: some wait) get what they get alone
    let prompts: Vec<String> = (0..7).map(|i| format!("Prompt number {i}")).collect();
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            let (_, r) = s.post(
                "/v1/completions",
                &serde_json::json!({"prompt": p, "max_tokens": 10, "temperature": 0}),
            );
            r["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    let together: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| {
                let s = &s;
                sc.spawn(move || {
                    let (_, r) = s.post(
                        "/v1/completions",
                        &serde_json::json!({"prompt": p, "max_tokens": 10, "temperature": 0}),
                    );
                    r["choices"][0]["text"].as_str().unwrap().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);

    // lm-eval's scoring request: echo + logprobs, no new tokens: each prompt token's
    // log-probability given those before it, as `tinfer logits --all` gives them
    let ids = [72u32, 101, 108, 108, 111, 33];
    let (status, r) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": ids, "max_tokens": 0, "echo": true, "logprobs": 1}),
    );
    assert_eq!(status, 200, "{r}");
    let lp = &r["choices"][0]["logprobs"];
    assert_eq!(r["choices"][0]["text"], "Hello!");
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null());
    let model = fixtures().join("tiny-llama-gqa");
    let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_tinfer"))
        .args([
            "logits",
            "-m",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--all",
            "--json",
            "--ids",
            &list.join(","),
        ])
        .output()
        .unwrap();
    let logits: Json = serde_json::from_slice(&out.stdout).unwrap();
    for i in 1..ids.len() {
        let row: Vec<f64> = logits["logits"][i - 1]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let want = row[ids[i] as usize] - lse;
        let got = lp["token_logprobs"][i].as_f64().unwrap();
        assert!((got - want).abs() < 1e-5, "token {i}: {got} vs {want}");
        assert_eq!(lp["top_logprobs"][i].as_object().unwrap().len(), 1);
    }
    // logprobs of generated tokens: the greedy pick is the most likely
    let (_, r) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": "Hello", "max_tokens": 4, "temperature": 0, "logprobs": 2}),
    );
    let lp = &r["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 4, "{r}");
    for i in 0..4 {
        let best = lp["top_logprobs"][i]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!((lp["token_logprobs"][i].as_f64().unwrap() - best).abs() < 1e-6);
    }

    // n choices share the prompt; choice i samples with seed + i, so choice 0 is the n = 1 text
    let sampled = serde_json::json!({"prompt": "Hello", "max_tokens": 8, "temperature": 0.9, "seed": 7});
    let (_, one) = s.post("/v1/completions", &sampled);
    let mut three = sampled.clone();
    three["n"] = 3.into();
    let (status, r) = s.post("/v1/completions", &three);
    assert_eq!(status, 200, "{r}");
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(
        choices.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(choices[0]["text"], one["choices"][0]["text"]);
    assert_eq!(r["usage"]["completion_tokens"], 24);
    let mut four = three.clone();
    four["n"] = 4.into();
    assert_eq!(s.post("/v1/completions", &four).0, 400, "n past --parallel");

    // /metrics: Prometheus text with the counters moving
    let (status, metrics) = s.get("/metrics");
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("tinfer_requests_total") >= 10.0);
    assert!(value("tinfer_completion_tokens_total") >= 100.0);
    assert!(value("tinfer_time_to_first_token_seconds_count") >= 10.0);
    assert_eq!(value("tinfer_running_sequences"), 0.0);

    // a stop string ends the text before it, finish_reason stop
    let cut = &text[..text.len().min(3)];
    let (_, r) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": "Hello", "max_tokens": 12, "temperature": 0, "stop": [cut]}),
    );
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert!(!r["choices"][0]["text"].as_str().unwrap().contains(cut));
}

#[test]
fn bad_requests_get_openai_errors() {
    let s = Server::start(&["--api-key", "sekrit", "--max-body-kib", "4"]);
    let auth = "Authorization: Bearer sekrit";
    let post = |body: &str, headers: &[&str]| {
        let (status, text) = s.request("POST", "/v1/completions", body, headers);
        (status, serde_json::from_str::<Json>(&text).unwrap_or_default())
    };
    let (status, e) = post(r#"{"prompt": "Hi"}"#, &[]);
    assert_eq!(status, 401, "{e}");
    assert_eq!(e["error"]["type"], "invalid_api_key");
    for (body, needle) in [
        (r#"{"prompt": "Hi","#, "not valid JSON"),
        (r#"{"prompt": "Hi", "n": 0}"#, "n must be"),
        (r#"{"prompt": "Hi", "logprobs": 50}"#, "logprobs"),
        (
            r#"{"prompt": "Hi", "response_format": {"type": "json_schema"}}"#,
            "response_format",
        ),
        (r#"{"prompt": "Hi", "presence_penalty": "0.5"}"#, "presence_penalty"),
        (r#"{"prompt": "Hi", "logit_bias": {"28": 100}}"#, "logit_bias"),
        (r#"{"prompt": "Hi", "stream": "yes"}"#, "stream must be"),
        (r#"{"prompt": [[1, 2], "x"]}"#, "prompt must be"),
        (
            r#"{"prompt": "Hi", "frequency_penalty": 3}"#,
            "frequency_penalty must be in",
        ),
        (r#"{"prompt": "Hi", "ignore_eos": 1}"#, "ignore_eos must be"),
        (
            r#"{"prompt": "Hi", "echo": true, "stream": true}"#,
            "not supported with stream",
        ),
        (r#"{"prompt": "Hi", "max_tokens": -1}"#, "max_tokens"),
        (r#"{"prompt": "Hi", "temperature": "hot"}"#, "temperature"),
        (r#"{"prompt": "Hi", "model": "gpt-4"}"#, "not served here"),
        (r#"{"prompt": [1, 2, 99999]}"#, "token ids"),
        (r#"{"prompt": 5}"#, "prompt must be"),
    ] {
        let (status, e) = post(body, &[auth]);
        assert_eq!(status, 400, "{body}: {e}");
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {msg}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }
    let (status, text) = s.request("POST", "/v1/completions", &"x".repeat(5000), &[auth]);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("--max-body-kib"), "{text}");
    let long = "x".repeat(400);
    let (status, e) = post(&serde_json::json!({"prompt": long}).to_string(), &[auth]);
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("context holds 128"),
        "{e}"
    );
    // the tiny model has no chat template: a 400 that says so
    let (status, text) = s.request(
        "POST",
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
        &[auth],
    );
    assert_eq!(status, 400);
    assert!(text.contains("chat template"), "{text}");
    let (status, _) = post(r#"{"prompt": "Hi", "max_tokens": 2}"#, &[auth]);
    assert_eq!(status, 200);
    // lm-eval's batch of one token list, and "off" values of unsupported fields, are taken
    let (status, e) = post(
        r#"{"prompt": [[72, 105]], "max_tokens": 1, "presence_penalty": 0, "response_format": {"type": "text"}}"#,
        &["authorization: bearer sekrit"],
    );
    assert_eq!(status, 200, "{e}");
    // routes and methods that do not exist: OpenAI-shaped too
    let (status, text) = s.request("GET", "/v1/nothing", "", &[auth]);
    assert_eq!(status, 404);
    assert!(text.contains("\"error\""), "{text}");
    let (status, text) = s.request("GET", "/v1/completions", "", &[auth]);
    assert_eq!(status, 405);
    assert!(text.contains("\"error\""), "{text}");
    let (status, _) = s.request("POST", "/tokenize", r#"{"content": "Hi"}"#, &[]);
    assert_eq!(status, 401, "/tokenize wants the key too");
}

/// An `echo` request is scored in a sequence of its own, outside the scheduler: when it arrives
/// while running sequences hold most of a GPU pool it waits for their pages, and is then scored
/// as it is alone (before, it failed with a 500 "KV cache full").
#[test]
fn echo_waits_for_room_in_a_full_pool() {
    if gpu_request().is_none() {
        return;
    }
    // 16 pages of 16: two running sequences of 90 + 30 tokens take 8 pages each at the end
    let s = Server::start_on("gpu", &["--parallel", "3", "--kv-blocks", "16"]);
    let ids = |from: u32, n: u32| (from..from + n).collect::<Vec<u32>>();
    let echo = serde_json::json!({"prompt": ids(3, 100), "max_tokens": 0, "echo": true, "logprobs": 1});
    let (status, alone) = s.post("/v1/completions", &echo);
    assert_eq!(status, 200, "{alone}");
    let streams: Vec<TcpStream> = [5, 7]
        .iter()
        .map(|&from| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            let body = serde_json::json!({"prompt": ids(from, 90), "max_tokens": 30, "temperature": 0,
                "ignore_eos": true, "stream": true})
            .to_string();
            write!(
                c,
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut first = [0u8; 256];
            let _ = c.read(&mut first).unwrap(); // its prompt ran: 6 pages held
            c
        })
        .collect();
    let (status, busy) = s.post("/v1/completions", &echo);
    assert_eq!(status, 200, "an echo request while the pool is held: {busy}");
    assert_eq!(busy["choices"][0]["logprobs"], alone["choices"][0]["logprobs"]);
    drop(streams);
}

#[test]
fn a_client_that_disconnects_frees_its_place_and_sigterm_stops_the_server() {
    let mut s = Server::start(&["--parallel", "1"]);
    // start a long stream, read its first chunk, hang up
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let body = serde_json::json!({"prompt": "Hello", "max_tokens": 100, "temperature": 0, "stream": true}).to_string();
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let _ = c.read(&mut first).unwrap();
    drop(c);
    // with one place, the next request only runs once the abandoned one is stopped
    let t0 = Instant::now();
    let (status, r) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": "Hi", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{r}");
    assert!(t0.elapsed() < Duration::from_secs(60));
    // SIGTERM: a graceful exit
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = &mut s;
}

/// Several prompts in one request (each with `n` choices, numbered prompt-major), usage counted
/// once a prompt, streamed log-probabilities whose tokens spell the streamed text, penalties
/// that change greedy text, and the prefix cache: a repeated long prompt takes its blocks from
/// the cache (usage's cached_tokens and the metric say so) and gives the same text.
#[test]
fn several_prompts_streamed_logprobs_penalties_and_the_prefix_cache() {
    let s = Server::start(&[]);
    let body = serde_json::json!({"prompt": ["Hello", "Once upon"], "n": 2, "max_tokens": 4, "temperature": 0});
    let (status, r) = s.post("/v1/completions", &body);
    assert_eq!(status, 200, "{r}");
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4, "{r}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{r}");
    }
    assert_eq!(choices[0]["text"], choices[1]["text"], "greedy choices of one prompt");
    let alone = |p: &str| {
        let (_, r) = s.post(
            "/v1/completions",
            &serde_json::json!({"prompt": p, "max_tokens": 4, "temperature": 0}),
        );
        r
    };
    let (a, b) = (alone("Hello"), alone("Once upon"));
    assert_eq!(choices[0]["text"], a["choices"][0]["text"]);
    assert_eq!(choices[2]["text"], b["choices"][0]["text"]);
    let prompt_n = a["usage"]["prompt_tokens"].as_u64().unwrap() + b["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(r["usage"]["prompt_tokens"], prompt_n, "{r}");
    // streamed logprobs: each chunk's tokens spell its text
    let body = serde_json::json!({"prompt": "Hello", "max_tokens": 6, "temperature": 0, "logprobs": 2, "stream": true});
    let (status, text) = s.request("POST", "/v1/completions", &body.to_string(), &[]);
    assert_eq!(status, 200);
    let (mut streamed, mut spelled, mut tokens) = (String::new(), String::new(), 0);
    for d in sse_data(&text).iter().filter(|d| *d != "[DONE]") {
        let c: Json = serde_json::from_str(d).unwrap();
        let choice = &c["choices"][0];
        streamed.push_str(choice["text"].as_str().unwrap_or_default());
        if let Some(lp) = choice["logprobs"].as_object() {
            for (t, (v, top)) in lp["tokens"].as_array().unwrap().iter().zip(
                lp["token_logprobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(lp["top_logprobs"].as_array().unwrap()),
            ) {
                spelled.push_str(t.as_str().unwrap());
                assert!(v.as_f64().unwrap() <= 0.0, "{c}");
                assert_eq!(top.as_object().unwrap().len(), 2, "{c}");
                tokens += 1;
            }
        }
    }
    assert_eq!(spelled, streamed, "streamed logprobs' tokens vs text");
    assert!(tokens > 0);
    // penalties: 0 leaves greedy text as it is; 2 changes a repetitive continuation
    let list = "1, 2, 1, 2, 1, 2, 1, 2,";
    let (_, plain) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": list, "max_tokens": 12, "temperature": 0}),
    );
    let (_, off) = s.post("/v1/completions", &serde_json::json!({"prompt": list, "max_tokens": 12, "temperature": 0, "presence_penalty": 0, "frequency_penalty": 0}));
    let (_, on) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": list, "max_tokens": 12, "temperature": 0, "frequency_penalty": 2}),
    );
    assert_eq!(plain["choices"][0]["text"], off["choices"][0]["text"]);
    assert_ne!(plain["choices"][0]["text"], on["choices"][0]["text"], "{plain} vs {on}");
    // the prefix cache: 40+ tokens of the byte-level tiny model are two full blocks of 16
    let long = "The same long system prompt comes first in every request; ";
    let ask = serde_json::json!({"prompt": format!("{long}then a question."), "max_tokens": 5, "temperature": 0});
    let (_, cold) = s.post("/v1/completions", &ask);
    let hits = |s: &Server| -> f64 {
        let (_, m) = s.get("/metrics");
        let line = m
            .lines()
            .find(|l| l.starts_with("tinfer_prefix_cache_hit_tokens_total"))
            .unwrap_or_else(|| panic!("{m}"));
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    let before = hits(&s);
    let (_, warm) = s.post("/v1/completions", &ask);
    assert_eq!(warm["choices"][0]["text"], cold["choices"][0]["text"]);
    let cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached >= 32, "{warm}");
    assert_eq!(hits(&s) - before, cached as f64);
}

/// Fixes after a user's trial: an explicit null `max_completion_tokens` leaves `max_tokens` in
/// force; `response_format: json_object` gives a JSON object prefix (all of one when it stops),
/// json_schema is refused; the model answers to the name given to -m and to its directory's
/// name; a stream's error ends with [DONE]; usage is null on every chunk but the last.
#[test]
fn nulls_json_mode_model_names_and_stream_ends() {
    let s = Server::start(&["--timeout", "30"]);
    let (status, r) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": "Hello", "max_tokens": 3, "max_completion_tokens": null, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 3, "{r}");
    let (status, r) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": "Data: ", "max_tokens": 40, "temperature": 0, "response_format": {"type": "json_object"}}),
    );
    assert_eq!(status, 200, "{r}");
    let text = r["choices"][0]["text"].as_str().unwrap();
    assert!(text.trim_start().starts_with('{'), "{text:?}");
    if r["choices"][0]["finish_reason"] == "stop" {
        let v: Json = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(v.is_object(), "{text:?}");
    }
    let (status, r) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {}}}),
    );
    assert_eq!(status, 400, "{r}");
    let (status, r) = s.post(
        "/v1/completions",
        &serde_json::json!({"prompt": "x", "max_tokens": 1, "model": "tiny-llama-gqa"}),
    );
    assert_eq!(status, 200, "the -m name: {r}");
    let body = serde_json::json!({"prompt": "Hello", "max_tokens": 3, "stream": true, "stream_options": {"include_usage": true}});
    let (_, text) = s.request("POST", "/v1/completions", &body.to_string(), &[]);
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Json> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let (last, rest) = chunks.split_last().unwrap();
    assert!(last["usage"]["total_tokens"].is_u64(), "{last}");
    assert!(rest
        .iter()
        .all(|c| c["usage"].is_null() && c.as_object().unwrap().contains_key("usage")));
}
