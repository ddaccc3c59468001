//! The engine thread: the one owner of the model. HTTP tasks send it `Job`s over a channel; it
//! admits them between steps (continuous batching: `Engine::step` prefills waiting sequences a
//! chunk at a time, then decodes every running one in one batch), turns each sequence's tokens
//! into text (streaming detokenisation, stop strings cut, as `tinfer generate` does), and sends
//! each job its `Event`s. A job whose receiver is gone (the client disconnected) is finished at
//! the next step and its KV pages are released.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use tinfer::engine::{log_probs, Engine, Sequence, StopReason, StopStrings};
use tinfer::model::{Entry, Want};
use tinfer::tokenizer::{TokenStream, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;

/// A request for the engine: a sequence to run, its stop strings, and where its events go;
/// `echo_top`: also score the prompt (each token's log-probability given those before it, and
/// this many most likely alternatives: `echo` with `logprobs` on completions).
pub struct Job {
    pub seq: Sequence,
    /// When the request arrived (time to first token counts from it).
    pub received: Instant,
    pub stops: Vec<String>,
    pub events: UnboundedSender<Event>,
    pub echo_top: Option<usize>,
    /// The index of its first choice in the response (a request of several prompts sends a job
    /// per prompt: prompt i's choices are i·n ..).
    pub first_index: usize,
}

/// Per token: its id, log-probability and the most likely (id, log-probability); None for a
/// prompt's first token, which nothing predicts.
pub type TokenLogprobs = Vec<(u32, Option<(f32, Vec<(u32, f32)>)>)>;

/// What the engine tells a job.
#[derive(Debug)]
pub enum Event {
    /// Text of choice `.0` that became whole (stop strings cut), with the log-probabilities of
    /// the tokens that made it when the sequence records them.
    Text(usize, String, Option<TokenLogprobs>),
    /// The end: why, and the token counts OpenAI's `usage` reports.
    /// Choice `index` ended (a request with `n` choices gets `n` of these).
    Done {
        index: usize,
        reason: StopReason,
        prompt_tokens: usize,
        /// Of the prompt, tokens whose KV blocks came from the prefix cache.
        cached_tokens: usize,
        completion_tokens: usize,
        /// The output's log-probabilities when the sequence asked for them.
        logprobs: Option<TokenLogprobs>,
        /// The prompt's, when the job asked (`echo_top`).
        prompt_logprobs: Option<TokenLogprobs>,
    },
    /// The job could not run: an HTTP status (400 a prompt past the context, 503 a full queue,
    /// 500 a device error) and why.
    Error(u16, String),
}

/// What every choice of a job shares: where its events go, its stop strings, the prompt's
/// log-probabilities (echo), when it arrived.
#[derive(Clone)]
struct Request {
    events: UnboundedSender<Event>,
    first_index: usize,
    stops: Vec<String>,
    prompt_logprobs: Option<TokenLogprobs>,
    received: Instant,
}

/// A choice of a job in the engine: its handle, detokeniser and stop strings.
struct Active<'t> {
    handle: usize,
    index: usize,     // its choice: 0, or fork i's i + 1 (`n` > 1)
    forks_seen: bool, // its forks (made when its prompt ends) have their own entries
    text: TokenStream<'t>,
    stops: StopStrings,
    req: Request,
    fed: usize,              // output tokens turned into text so far
    last: Option<Instant>,   // when its last token came
    logprobs: TokenLogprobs, // of tokens fed whose text has not been sent yet
}

impl<'t> Active<'t> {
    fn new(tok: &'t Tokenizer, handle: usize, index: usize, req: Request) -> Self {
        Active {
            handle,
            index: req.first_index + index,
            forks_seen: index > 0,
            text: TokenStream::new(tok),
            stops: StopStrings::new(&req.stops),
            req,
            fed: 0,
            last: None,
            logprobs: vec![],
        }
    }
}

/// Run the engine until the job channel closes (the server shuts down) and nothing is left:
/// at most `parallel` jobs in the engine, at most `queue` waiting for a place (503 past it).
pub fn run(mut engine: Engine, tok: Tokenizer, jobs: Receiver<Job>, parallel: usize, queue: usize, metrics: &Metrics) {
    let mut active: HashMap<usize, Active> = HashMap::new();
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    loop {
        // Take what has come in: block only when there is nothing to step.
        loop {
            let job = if active.is_empty() && waiting.is_empty() && open {
                // idle: the gauges say so before the wait
                metrics.running.set(0);
                metrics.waiting.set(0);
                metrics.engine(&engine);
                jobs.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                jobs.try_recv()
            };
            match job {
                Ok(job) if waiting.len() >= queue => {
                    let msg = format!("the server is busy: {queue} requests are already waiting; try again later");
                    let _ = job.events.send(Event::Error(503, msg));
                }
                Ok(job) => waiting.push_back(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Admit waiting jobs into free places (a client gone meanwhile is skipped).
        // (a job takes a sequence per choice)
        while let Some(job) = waiting.front() {
            if active.len() + 1 + job.seq.forks.len() > parallel {
                break;
            }
            // echo's scoring pass runs the whole prompt in a sequence of its own: it waits
            // until the pool can hold it (running sequences finish and free their pages)
            if job.echo_top.is_some() && !active.is_empty() && !engine.model.kv_room_new(job.seq.prompt.len()) {
                break;
            }
            let job = waiting.pop_front().unwrap();
            if !job.events.is_closed() {
                metrics.prompt_tokens.inc_by(job.seq.prompt.len() as u64);
                admit(&mut engine, &tok, &mut active, job);
            }
        }
        if active.is_empty() {
            metrics.running.set(0);
            metrics.waiting.set(waiting.len() as i64);
            if !open && waiting.is_empty() {
                return;
            }
            continue;
        }
        // A client gone: stop its sequence now.
        for a in active.values() {
            if a.req.events.is_closed() {
                engine.finish(a.handle, StopReason::Cancelled);
            }
        }
        if let Err(e) = engine.step() {
            // a failed step fails every job in it; the engine keeps serving
            for (_, a) in active.drain() {
                let _ = a.req.events.send(Event::Error(500, format!("{e:#}")));
                engine.finish(a.handle, StopReason::Cancelled);
                engine.take(a.handle);
            }
            continue;
        }
        // the forks a prompt's end made (`n` > 1) become choices of their own
        let parents: Vec<usize> = active.iter().filter(|(_, a)| !a.forks_seen).map(|(&h, _)| h).collect();
        for h in parents {
            let forked = engine.get(h).forked.clone();
            if forked.is_empty() && engine.get(h).output.is_empty() {
                continue; // its prompt is still running
            }
            let a = active.get_mut(&h).unwrap();
            a.forks_seen = true;
            let req = a.req.clone();
            for (i, f) in forked.into_iter().enumerate() {
                active.insert(f, Active::new(&tok, f, i + 1, req.clone()));
            }
        }
        let handles: Vec<usize> = active.keys().copied().collect();
        for h in handles {
            feed(&mut engine, active.get_mut(&h).unwrap(), metrics);
            if engine.get(h).is_finished() {
                let mut a = active.remove(&h).unwrap();
                metrics.running.set(active.len() as i64); // before its client hears of the end
                let tail = a.text.finish().ok().flatten().unwrap_or_default();
                if !a.stops.hit() {
                    let text = a.stops.push(&tail) + &a.stops.finish();
                    if !text.is_empty() || !a.logprobs.is_empty() {
                        let lps = seq_has_logprobs(&engine, h).then(|| std::mem::take(&mut a.logprobs));
                        let _ = a.req.events.send(Event::Text(a.index, text, lps));
                    }
                }
                let seq = engine.take(h);
                let reason = if a.stops.hit() {
                    StopReason::StopString
                } else {
                    seq.generation().stop
                };
                let logprobs = seq.logprobs.map(|_| {
                    let lps = seq.token_logprobs.iter().cloned().map(Some);
                    seq.output.iter().copied().zip(lps).collect()
                });
                let _ = a.req.events.send(Event::Done {
                    index: a.index,
                    reason,
                    prompt_tokens: seq.prompt.len(),
                    cached_tokens: seq.cached,
                    completion_tokens: seq.output.len(),
                    logprobs,
                    prompt_logprobs: a.req.prompt_logprobs.take(),
                });
            }
        }
        metrics.running.set(active.len() as i64);
        metrics.waiting.set(waiting.len() as i64);
        metrics.engine(&engine);
    }
}

/// Whether sequence `h` records log-probabilities.
fn seq_has_logprobs(engine: &Engine, h: usize) -> bool {
    engine.get(h).logprobs.is_some()
}

/// Add a job's sequence to the engine (or tell it why not).
fn admit<'t>(engine: &mut Engine, tok: &'t Tokenizer, active: &mut HashMap<usize, Active<'t>>, job: Job) {
    let prompt_logprobs = match job.echo_top.map(|top| score(engine, &job.seq.prompt, top)) {
        Some(Err(e)) => {
            let _ = job.events.send(Event::Error(500, format!("{e:#}")));
            return;
        }
        Some(Ok(lps)) => Some(lps),
        None => None,
    };
    match engine.add(job.seq) {
        Ok(handle) => {
            let req = Request {
                events: job.events,
                first_index: job.first_index,
                stops: job.stops,
                prompt_logprobs,
                received: job.received,
            };
            let a = Active::new(tok, handle, 0, req);
            active.insert(handle, a);
        }
        Err(e) => {
            let _ = job.events.send(Event::Error(400, format!("{e:#}")));
        }
    }
}

/// Turn the tokens a sequence produced since the last call into text events; a stop string
/// seen finishes the sequence.
fn feed(engine: &mut Engine, a: &mut Active, metrics: &Metrics) {
    let s = engine.get(a.handle);
    let new = s.output[a.fed..].to_vec(); // only what came since the last call
    let lps = s.logprobs.is_some().then(|| s.token_logprobs[a.fed..].to_vec());
    let now = Instant::now();
    for (i, &id) in new.iter().enumerate() {
        a.fed += 1;
        if let Some(l) = &lps {
            a.logprobs.push((id, l.get(i).cloned()));
        }
        metrics.completion_tokens.inc();
        match a.last {
            None => metrics
                .time_to_first_token
                .observe((now - a.req.received).as_secs_f64()),
            Some(t) => metrics.inter_token_latency.observe((now - t).as_secs_f64()),
        }
        a.last = Some(now);
        if a.stops.hit() {
            break;
        }
        if let Ok(Some(text)) = a.text.push(id) {
            let piece = a.stops.push(&text);
            if !piece.is_empty() {
                let lp = lps.is_some().then(|| std::mem::take(&mut a.logprobs));
                let _ = a.req.events.send(Event::Text(a.index, piece, lp));
            }
            if a.stops.hit() {
                engine.finish(a.handle, StopReason::StopString);
            }
        }
    }
}

/// Each prompt token's log-probability given those before it (None for the first) and the
/// `top` most likely, from one forward of every position in a sequence of its own.
fn score(engine: &mut Engine, prompt: &[u32], top: usize) -> anyhow::Result<TokenLogprobs> {
    let model = &mut engine.model;
    let seq = model.new_seq()?;
    let entry = [Entry {
        seq,
        tokens: prompt,
        want: Want::All,
    }];
    let logits = model.forward(&entry);
    model.release(seq);
    let logits = logits?.remove(0);
    let vocab = model.cfg.vocab_size;
    let mut out = vec![(prompt[0], None)];
    for (i, &t) in prompt.iter().enumerate().skip(1) {
        out.push((t, Some(log_probs(&logits[(i - 1) * vocab..i * vocab], t, top))));
    }
    Ok(out)
}
