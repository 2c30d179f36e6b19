//! The engine on a thread of its own, for serving: the split vLLM v1 made between its
//! EngineCore and the async front end, in one process.
//!
//! One thread owns the [`Engine`] and runs steps while there is work; when there is none
//! it blocks on its command channel (no spinning). Everything else holds an
//! [`EngineHandle`] — cheap to clone, `Send + Sync` — that validates a request against the
//! model's limits *before* anything is queued, sends commands (add, abort, stop a
//! sequence, abort all), and reads a [`EngineStats`] snapshot the thread publishes after
//! every step (a scrape of `/metrics` never waits for a step).
//!
//! Each request's outputs arrive on its own [`RequestStream`]: token deltas, then one final
//! output per sequence carrying its finish reason and metrics (usage and timings), or a
//! [`Event::Failed`] if its step failed. Dropping the stream before the end aborts the
//! request: its blocks are freed at the engine's next command check, within one step. An
//! abort that races the last token is a no-op.
//!
//! Memory stays bounded in a long-running server: the engine keeps no history (see
//! [`crate::EngineConfig::keep_history`]), and the thread keeps one sender per live request.

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::executor::Executor;
use crate::ids::{RequestId, TokenId};
use crate::inspect::PoolPicture;
use crate::kv_space::KvUsage;
use crate::metrics::{EngineTotals, StepMetrics};
use crate::output::RequestOutput;
use crate::request::{validate, Request, SamplingParams};
use pagedattn_kv::BlockManagerStats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What a request's stream carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New tokens of one sequence; its last output has `finished` and `metrics` set.
    Output(RequestOutput),
    /// The request ended with an error (its step failed, or the engine stopped).
    Failed(String),
}

/// The engine's state as of its latest step, for metrics and health.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences running (holding KV memory).
    pub running: usize,
    /// Sequences waiting for admission.
    pub waiting: usize,
    /// KV memory use.
    pub kv: KvUsage,
    /// The block manager's counters (paged policies).
    pub blocks: Option<BlockManagerStats>,
    /// Totals since start.
    pub totals: EngineTotals,
    /// The latest step.
    pub last_step: Option<StepMetrics>,
}

enum Command {
    Add {
        req: Request,
        tx: UnboundedSender<Event>,
    },
    Abort(RequestId),
    Stop(RequestId, usize),
    AbortAll,
    Picture {
        max_cells: usize,
        tx: tokio::sync::oneshot::Sender<Option<PoolPicture>>,
    },
}

struct Shared {
    epoch: Instant,
    max_len: usize,
    vocab_size: usize,
    eos_token_id: Option<TokenId>,
    /// Every token that ends a sequence unless a request ignores it: end-of-sequence and
    /// the model's end-of-turn ids.
    end_token_ids: Vec<TokenId>,
    next_id: AtomicU64,
    /// Requests added whose first token has not come out yet (queued or in prefill).
    not_started: AtomicUsize,
    /// Requests added and not yet ended.
    in_flight: AtomicUsize,
    alive: AtomicBool,
    stats: Mutex<EngineStats>,
}

/// A cheap, cloneable handle to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("max_len", &self.shared.max_len)
            .field("alive", &self.is_alive())
            .finish_non_exhaustive()
    }
}

/// Starts the engine thread, which owns `engine` until every handle is dropped.
pub fn spawn<E: Executor + Send + 'static>(engine: Engine<E>) -> Result<EngineHandle> {
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        epoch: engine.epoch(),
        max_len: engine.max_model_len(),
        vocab_size: engine.spec().vocab_size,
        eos_token_id: engine.spec().eos_token_id,
        end_token_ids: {
            let spec = engine.spec();
            spec.eos_token_id
                .into_iter()
                .chain(spec.end_of_turn_ids.iter().copied())
                .collect()
        },
        next_id: AtomicU64::new(1),
        not_started: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        alive: AtomicBool::new(true),
        stats: Mutex::new(snapshot(&engine)),
    });
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("pagedattn-engine".into())
        .spawn(move || EngineThread::new(engine, rx, thread_shared).run())
        .map_err(|e| EngineError::Internal(format!("cannot start the engine thread: {e}")))?;
    Ok(EngineHandle { tx, shared })
}

impl EngineHandle {
    /// Validates a request and queues it; its arrival is `received` (when the request
    /// reached the server). On a validation error nothing is queued.
    pub fn add(
        &self,
        prompt: Vec<TokenId>,
        params: SamplingParams,
        received: Instant,
    ) -> Result<RequestStream> {
        let id = RequestId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let arrival = received
            .saturating_duration_since(self.shared.epoch)
            .as_secs_f64();
        let n = params.n;
        let req = Request {
            id,
            prompt,
            params,
            arrival,
        };
        validate(&req, self.shared.max_len, self.shared.vocab_size)?;
        let (tx, rx) = unbounded_channel();
        self.shared.not_started.fetch_add(1, Ordering::Relaxed);
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Command::Add { req, tx }).is_err() {
            self.shared.not_started.fetch_sub(1, Ordering::Relaxed);
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(EngineError::Stopped);
        }
        Ok(RequestStream {
            id,
            rx,
            remaining: n,
            handle: self.clone(),
        })
    }

    /// Aborts a request (a no-op if it has ended or never existed).
    pub fn abort(&self, id: RequestId) {
        let _ = self.tx.send(Command::Abort(id));
    }

    /// Ends sequence `index` of request `id` as stopped (the caller saw a stop string).
    pub fn stop_sequence(&self, id: RequestId, index: usize) {
        let _ = self.tx.send(Command::Stop(id, index));
    }

    /// Aborts every request in flight.
    pub fn abort_all(&self) {
        let _ = self.tx.send(Command::AbortAll);
    }

    /// A picture of the paged pool and the live sequences, taken by the engine thread
    /// between two steps (so after at most one step); `None` for a contiguous policy or
    /// when the engine thread is gone. It costs one pass over the blocks, on the engine
    /// thread: callers should not ask more than a few times a second.
    pub async fn pool_picture(&self, max_cells: usize) -> Option<PoolPicture> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Command::Picture { max_cells, tx }).ok()?;
        rx.await.ok().flatten()
    }

    /// The latest stats the engine thread published.
    pub fn stats(&self) -> EngineStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests received whose first token has not come out yet.
    pub fn num_not_started(&self) -> usize {
        self.shared.not_started.load(Ordering::Relaxed)
    }

    /// Requests received that have not ended.
    pub fn num_in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the engine thread is running.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Relaxed)
    }

    /// The longest prompt + output accepted.
    pub fn max_model_len(&self) -> usize {
        self.shared.max_len
    }

    /// The model's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.shared.vocab_size
    }

    /// The model's end-of-sequence token.
    pub fn eos_token_id(&self) -> Option<TokenId> {
        self.shared.eos_token_id
    }

    /// Every token that ends a sequence unless a request ignores end-of-sequence: the
    /// end-of-sequence token and the model's end-of-turn ids.
    pub fn end_token_ids(&self) -> &[TokenId] {
        &self.shared.end_token_ids
    }
}

/// One request's outputs, in order. Dropping it before the end aborts the request.
#[derive(Debug)]
pub struct RequestStream {
    id: RequestId,
    rx: UnboundedReceiver<Event>,
    /// Sequences that have not finished.
    remaining: usize,
    handle: EngineHandle,
}

impl RequestStream {
    /// The request's id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The next event; `None` once every sequence has finished (or the request failed).
    pub async fn next(&mut self) -> Option<Event> {
        if self.remaining == 0 {
            return None;
        }
        let ev = self.rx.recv().await;
        Some(self.account(ev))
    }

    /// The next event, blocking the calling thread (not for use inside an async runtime).
    pub fn blocking_next(&mut self) -> Option<Event> {
        if self.remaining == 0 {
            return None;
        }
        let ev = self.rx.blocking_recv();
        Some(self.account(ev))
    }

    fn account(&mut self, ev: Option<Event>) -> Event {
        match ev {
            Some(Event::Output(o)) => {
                if o.finished.is_some() {
                    self.remaining -= 1;
                }
                Event::Output(o)
            }
            Some(Event::Failed(m)) => {
                self.remaining = 0;
                Event::Failed(m)
            }
            None => {
                // The engine thread is gone without ending this request.
                self.remaining = 0;
                Event::Failed(EngineError::Stopped.to_string())
            }
        }
    }

    /// Ends sequence `index` as stopped (a stop string), freeing its memory.
    pub fn stop_sequence(&self, index: usize) {
        self.handle.stop_sequence(self.id, index);
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if self.remaining > 0 {
            self.handle.abort(self.id);
        }
    }
}

struct Live {
    tx: UnboundedSender<Event>,
    /// Sequences not finished.
    remaining: usize,
    started: bool,
}

struct EngineThread<E: Executor> {
    engine: Engine<E>,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    live: HashMap<RequestId, Live>,
}

/// Clears `alive` when the thread ends, by return or by panic.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Relaxed);
    }
}

impl<E: Executor> EngineThread<E> {
    fn new(engine: Engine<E>, rx: mpsc::Receiver<Command>, shared: Arc<Shared>) -> Self {
        Self {
            engine,
            rx,
            shared,
            live: HashMap::new(),
        }
    }

    fn run(mut self) {
        let _guard = AliveGuard(self.shared.clone());
        loop {
            if !self.engine.has_unfinished() {
                // Idle: block until a command comes; every handle gone ends the thread.
                match self.rx.recv() {
                    Ok(c) => self.command(c),
                    Err(_) => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(c) => self.command(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        // No handle and no stream is left to read anything.
                        let _ = self.engine.abort_all();
                        return;
                    }
                }
            }
            if self.engine.has_unfinished() {
                let steps = self.engine.totals().steps;
                match self.engine.step() {
                    Ok(outputs) => self.dispatch(outputs),
                    Err(EngineError::StepFailed { requests, source }) => {
                        for id in requests {
                            self.fail(id, &format!("the model step failed: {source}"));
                        }
                    }
                    Err(e) => {
                        // A bug: end everything rather than run on a state in doubt.
                        let msg = format!("engine error: {e}");
                        let _ = self.engine.abort_all();
                        let ids: Vec<RequestId> = self.live.keys().copied().collect();
                        for id in ids {
                            self.fail(id, &msg);
                        }
                    }
                }
                if self.engine.totals().steps == steps && self.engine.has_unfinished() {
                    // Nothing could be scheduled: wait for a command rather than spin.
                    if let Ok(c) = self.rx.recv_timeout(Duration::from_millis(1)) {
                        self.command(c);
                    }
                }
            }
            self.publish();
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Add { req, tx } => {
                let (id, n) = (req.id, req.params.n);
                match self.engine.add_request(req) {
                    Ok(()) => {
                        self.live.insert(
                            id,
                            Live {
                                tx,
                                remaining: n,
                                started: false,
                            },
                        );
                    }
                    Err(e) => {
                        self.ended(false);
                        let _ = tx.send(Event::Failed(e.to_string()));
                    }
                }
            }
            Command::Abort(id) => {
                if let Ok(outs) = self.engine.abort(id) {
                    self.dispatch(outs);
                }
            }
            Command::Stop(id, index) => {
                if let Ok(outs) = self.engine.stop_sequence(id, index) {
                    self.dispatch(outs);
                }
            }
            Command::AbortAll => {
                if let Ok(outs) = self.engine.abort_all() {
                    self.dispatch(outs);
                }
            }
            Command::Picture { max_cells, tx } => {
                let _ = tx.send(self.engine.pool_picture(max_cells));
            }
        }
    }

    /// Sends each output to its request's stream; a stream whose reader is gone (the
    /// client disconnected) aborts its request at once.
    fn dispatch(&mut self, outputs: Vec<RequestOutput>) {
        let mut gone = Vec::new();
        for o in outputs {
            let id = o.request;
            let Some(live) = self.live.get_mut(&id) else {
                continue;
            };
            if !live.started {
                live.started = true;
                self.shared.not_started.fetch_sub(1, Ordering::Relaxed);
            }
            if o.finished.is_some() {
                live.remaining -= 1;
            }
            let last = live.remaining == 0;
            if live.tx.send(Event::Output(o)).is_err() && !last {
                gone.push(id);
            }
            if last {
                self.live.remove(&id);
                self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        }
        for id in gone {
            if let Ok(outs) = self.engine.abort(id) {
                self.dispatch(outs);
            }
        }
    }

    /// Ends request `id` with an error event (its memory is already freed).
    fn fail(&mut self, id: RequestId, message: &str) {
        if let Some(live) = self.live.remove(&id) {
            self.ended(live.started);
            let _ = live.tx.send(Event::Failed(message.to_string()));
        }
    }

    fn ended(&self, started: bool) {
        if !started {
            self.shared.not_started.fetch_sub(1, Ordering::Relaxed);
        }
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn publish(&self) {
        let s = snapshot(&self.engine);
        *self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = s;
    }
}

fn snapshot<E: Executor>(e: &Engine<E>) -> EngineStats {
    EngineStats {
        running: e.num_running(),
        waiting: e.num_waiting(),
        kv: e.kv_usage(),
        blocks: e.block_manager_stats(),
        totals: e.totals(),
        last_step: e.last_step().copied(),
    }
}
