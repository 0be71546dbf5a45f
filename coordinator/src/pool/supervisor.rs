//! The supervisor loop: the I/O around the engine. Its `select!` only turns what happens (a
//! slot's event, a refused connection, the consumer's progress, the next item, a signal, a
//! timer) into an [`Event`]; [`Engine::handle`] decides; [`Shell::execute`] carries the
//! actions out (start a slot, send it a command, release an outcome, log an attempt).

use super::engine::{Action, Engine, Event};
use super::job::{Job, ResultSender, Work};
use super::listener::{self, SocketDir};
use super::listening::Listening;
use super::process::SpawnSpec;
use super::slot::{self, SlotCmd};
use super::zygote::{self, Zygote};
use super::{Observers, PoolError, Stats, Stop};
use crate::signal::Interrupt;
use powerpool_shared::env::to_hex;
use powerpool_shared::{Input, Welcome, TOKEN_LEN};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Runs `job` to the end, handing outcomes to `results`. Returns what happened along the way
/// whether or not the run succeeded; every worker is reaped before it returns.
pub async fn run(
    job: Job,
    results: &mut ResultSender,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
    observers: &mut Observers,
) -> (Stats, Result<(), Stop>) {
    // The socket is made at the first executed worker; forked workers are born connected
    // (`zygote.rs`). Its base directory is checked now, so that a bad one fails every run
    // alike, at once.
    // A first wave asked for early (`zygote::ask_early`) was given its secret then.
    let early = zygote::take_early();
    let token = SocketDir::base().and_then(|_| match &early {
        Some((_, token)) => Ok(*token),
        None => listener::new_token(),
    });
    let token = match token {
        Ok(token) => token,
        Err(err) => return (Stats::default(), Err(Stop::Fatal(PoolError::Socket(err)))),
    };
    let (register_tx, register_rx) = mpsc::unbounded_channel();
    let (refusals_tx, mut refusals) = mpsc::unbounded_channel();
    let workers = job.config.workers as u64;
    let listening = Listening::NotYet { token, workers, register_rx, refusals_tx };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let Job { task, work, config, ordered } = job;
    let spec = SpawnSpec {
        command: config.command.clone(),
        socket: None,
        token_hex: to_hex(&token),
        measure_memory: config.max_worker_memory.is_some(),
        arena: config.arena.clone(),
    };
    let now = Instant::now();
    let (engine, input, mut source) = match work {
        Work::Range { chunks, format } => {
            (Engine::range(chunks, format, config, ordered, now), Input::Range(format), None)
        }
        Work::Items { source, batching, lines } => {
            let mut engine = Engine::items(batching, config, ordered, now);
            if lines {
                engine.name_items_as_lines();
            }
            (engine, Input::Items, Some(Source::One(source)))
        }
        Work::Runs { source, batching } => (
            Engine::items(batching, config, ordered, now),
            Input::Items,
            Some(Source::Runs(source)),
        ),
        Work::Commands { source, batching, input } => {
            let mut engine = Engine::items(batching, config, ordered, now);
            if matches!(input, Input::Lines(_)) {
                engine.name_items_as_lines();
            }
            (engine, input, Some(Source::One(source)))
        }
    };
    // Workers asked for early that this run cannot use (it executes its own) are ended here.
    let first = match (spec.is_own_worker(), early) {
        (true, Some((asked, _))) => Some(First::Asked(asked)),
        (true, None) => zygote::take().map(First::Zygote),
        (false, _) => None,
    };
    let mut shell = Shell {
        engine,
        first,
        spec: Arc::new(spec),
        token,
        listening,
        welcome: Welcome { task, input },
        register_tx,
        events_tx,
        slots: HashMap::new(),
        numbers: SlotNumbers::default(),
        restarts_shown: 0,
        wave: Vec::new(),
    };
    let result = shell
        .main_loop(results, &mut refusals, &mut events, interrupts, &mut source, observers)
        .await;
    shell.stop_all(result.is_err(), &mut events, results, observers).await;
    shell.listening.close();
    (shell.engine.into_stats(), result)
}

/// Where the first wave of workers comes from.
enum First {
    /// The zygote, to be asked when the engine spawns them.
    Zygote(Zygote),
    /// The zygote, asked before the run started (`zygote::ask_early`).
    Asked(zygote::Asked),
}

struct Shell {
    engine: Engine,
    /// Forks the first workers, if this process has one (`zygote.rs`).
    first: Option<First>,
    spec: Arc<SpawnSpec>,
    /// The run's secret, which every worker's hello must carry.
    token: [u8; TOKEN_LEN],
    listening: Listening,
    welcome: Welcome,
    register_tx: mpsc::UnboundedSender<listener::Registration>,
    events_tx: mpsc::UnboundedSender<Event>,
    slots: HashMap<u64, mpsc::UnboundedSender<SlotCmd>>,
    numbers: SlotNumbers,
    restarts_shown: u32,
    /// The ids of the first wave asked of the zygote: any may yet be executed (its fork
    /// failed), whichever worker makes the socket, so the listener expects them all.
    wave: Vec<u64>,
}

/// Each live worker's slot number, 1 to the pool's size: a replacement takes the lowest number
/// free, which is its predecessor's (`run`'s `{%}`): freed when the worker exits, or when it is
/// shut down to be recycled (its replacement starts before it has exited).
#[derive(Debug, Default)]
struct SlotNumbers {
    taken: HashMap<u64, u64>,
}

impl SlotNumbers {
    fn take(&mut self, id: u64) -> u64 {
        let number = (1..).find(|n| !self.taken.values().any(|t| t == n)).expect("unbounded");
        self.taken.insert(id, number);
        number
    }

    /// Gives `id` the number its worker was forked with.
    fn set(&mut self, id: u64, number: u64) {
        self.taken.insert(id, number);
    }

    fn free(&mut self, id: u64) {
        self.taken.remove(&id);
    }
}

impl Shell {
    async fn main_loop(
        &mut self,
        results: &mut ResultSender,
        refusals: &mut mpsc::UnboundedReceiver<String>,
        events: &mut mpsc::UnboundedReceiver<Event>,
        interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
        source: &mut Option<Source>,
        observers: &mut Observers,
    ) -> Result<(), Stop> {
        loop {
            self.execute(results, observers)?;
            if let Some(end) = self.engine.take_end() {
                return end;
            }
            let timer = self.engine.next_timer();
            let wants_items = self.engine.wants_items() && source.is_some();
            let event = tokio::select! {
                Some(event) = events.recv() => {
                    if let Event::Exited { id, .. } = &event {
                        // Its slot task has ended: nothing more to tell it, or wait for.
                        self.slots.remove(id);
                    }
                    event
                }
                Some(why) = refusals.recv() => Event::ConnectionRefused(why),
                changed = results.consumed.changed() => {
                    if changed.is_err() {
                        return Err(Stop::ConsumerGone);
                    }
                    let consumed = *results.consumed.borrow();
                    if let Some(bar) = &observers.progress {
                        bar.set_position(consumed);
                    }
                    Event::Consumed(consumed)
                }
                items = next_items(source), if wants_items => match items {
                    Some(Pulled::Items(items)) => Event::Items(items),
                    Some(Pulled::Runs(runs)) => Event::Runs(runs),
                    None => {
                        *source = None;
                        Event::SourceEnded
                    }
                },
                Some(int) = interrupts.recv() => Event::Interrupt(int),
                () = sleep_until(timer), if timer.is_some() => Event::Tick,
            };
            if let Event::Exited { id, .. } = &event {
                // Its slot task has ended: the end of the run must not wait for it again.
                self.numbers.free(*id);
                self.slots.remove(id);
            }
            if let Event::ForkFailed { id } = event {
                // Executed instead, as the zygote could not fork it: the socket is opened for
                // it if it is the run's first executed worker.
                self.listen(id)?;
                self.tell(id, SlotCmd::Exec(Arc::clone(&self.spec)));
                continue;
            }
            self.engine.handle(event, Instant::now());
        }
    }

    /// The first workers of the run, by their ids: their numbers, and each one's answer from
    /// the zygote, which comes as the zygote forks it (a worker it could not fork is executed
    /// instead: `Event::ForkFailed`). Empty once the zygote is used, or where there is none.
    /// Workers asked for early that the engine does not spawn are ended.
    fn fork_wave(&mut self, actions: &[Action]) -> HashMap<u64, (u64, zygote::Answer)> {
        let ids: Vec<u64> = actions
            .iter()
            .filter_map(|a| if let Action::Spawn { id } = a { Some(*id) } else { None })
            .collect();
        let mut wave = HashMap::new();
        if ids.is_empty() {
            return wave;
        }
        let asked = match self.first.take() {
            None => return wave,
            Some(First::Asked(asked)) => asked,
            Some(First::Zygote(zygote)) => {
                let workers = ids.iter().map(|&id| (id, self.numbers.take(id))).collect();
                zygote.ask(&self.spec.shared_env(), workers)
            }
        };
        let asked_for = asked.workers.clone();
        self.wave = ids.clone();
        for ((id, number), answer) in asked_for.into_iter().zip(asked.answer_each()) {
            if !ids.contains(&id) {
                // Dropping its receiver ends the worker when its answer comes.
                drop(answer);
                continue;
            }
            self.numbers.set(id, number);
            wave.insert(id, (number, answer));
        }
        wave
    }

    /// Carries out what the engine decided.
    fn execute(&mut self, results: &ResultSender, observers: &mut Observers) -> Result<(), Stop> {
        let actions = self.engine.take_actions();
        let mut wave = self.fork_wave(&actions);
        let mut failed = None;
        for action in actions {
            match action {
                Action::Spawn { id } => {
                    let (number, forked) = match wave.remove(&id) {
                        Some((number, answer)) => (number, Some(answer)),
                        None => (self.numbers.take(id), None),
                    };
                    if forked.is_none() {
                        if let Err(stop) = self.listen(id) {
                            // The other actions still run: a result released with this
                            // spawn is not lost.
                            failed.get_or_insert(stop);
                            continue;
                        }
                    }
                    let cmd = slot::start(
                        id,
                        number,
                        forked,
                        self.token,
                        Arc::clone(&self.spec),
                        self.welcome.clone(),
                        self.register_tx.clone(),
                        self.events_tx.clone(),
                    );
                    self.slots.insert(id, cmd);
                }
                Action::Send { id, unit } => self.tell(id, SlotCmd::Send(unit)),
                Action::Shutdown { id } => {
                    // A worker is shut down with nothing in flight, and its replacement is
                    // spawned next: the replacement takes its number (`{%}` stays in 1..=N).
                    self.numbers.free(id);
                    self.tell(id, SlotCmd::Shutdown);
                }
                Action::Terminate { id } => self.tell(id, SlotCmd::Terminate),
                Action::Kill { id } => self.tell(id, SlotCmd::Kill),
                Action::Release(released) => {
                    if !results.push(released) {
                        return Err(Stop::ConsumerGone);
                    }
                }
                Action::Log(attempt) => {
                    if let Some(log) = observers.joblog.as_mut() {
                        log.record(&attempt);
                    }
                }
                Action::Stalled(stall) => {
                    let ran = stall.ran.as_secs_f64();
                    tracing::warn!(
                        "worker pid {} has been running {} for {ran:.1} s, {:.0}x the median of \
                         its siblings ({:.3} s): it may be stopped or hung; --task-timeout \
                         DURATION ends such a worker and retries its work",
                        stall.pid,
                        stall.what,
                        ran / stall.median.as_secs_f64().max(1e-9),
                        stall.median.as_secs_f64()
                    );
                    if let Some(bar) = &observers.progress {
                        bar.set_message(format!("worker pid {} stalled?", stall.pid));
                    }
                }
            }
        }
        let restarts = self.engine.stats().restarts;
        if restarts != self.restarts_shown {
            self.restarts_shown = restarts;
            if let Some(bar) = &observers.progress {
                bar.set_message(format!("{restarts} restart(s)"));
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Opens the socket an executed worker connects to, if it is not open yet: the spec that
    /// slots are given from now on names it.
    fn listen(&mut self, first_id: u64) -> Result<(), Stop> {
        match self.listening.open(first_id, self.wave.clone()) {
            Ok(Some(socket)) => {
                let spec = SpawnSpec { socket: Some(socket), ..(*self.spec).clone() };
                self.spec = Arc::new(spec);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(err) => Err(Stop::Fatal(PoolError::Socket(err))),
        }
    }

    fn tell(&self, id: u64, cmd: SlotCmd) {
        if let Some(slot) = self.slots.get(&id) {
            let _ = slot.send(cmd);
        }
    }

    /// Ends every worker and waits until each has been reaped: no orphan, no zombie. Workers
    /// that are killed get SIGTERM first, so that those running children of their own (`run`,
    /// `map --exec`) end them; SIGKILL follows after a grace period. A worker that says its
    /// contract was broken on the way out is noted in the stats.
    async fn stop_all(
        &mut self,
        kill: bool,
        events: &mut mpsc::UnboundedReceiver<Event>,
        results: &ResultSender,
        observers: &mut Observers,
    ) {
        self.engine.cancel_all(Instant::now());
        let _ = self.execute(results, observers);
        for slot in self.slots.values() {
            let _ = slot.send(if kill { SlotCmd::Terminate } else { SlotCmd::Shutdown });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.slots.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Exited { id, .. })) => {
                    self.slots.remove(&id);
                }
                Ok(Some(Event::Broken { reason, .. })) => self.engine.note_broken(reason),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Where an items job's items come from: one at a time, or in runs.
#[derive(Debug)]
enum Source {
    One(mpsc::Receiver<super::Item>),
    Runs(mpsc::Receiver<super::Run>),
}

/// What one turn took from the source.
enum Pulled {
    Items(Vec<super::Item>),
    Runs(Vec<super::Run>),
}

/// The next items: the first to arrive, and those already waiting behind it (up to a batch's
/// worth for every worker), so that batches are made of what has arrived and a fast source
/// fills them. `None` once the source has ended.
async fn next_items(source: &mut Option<Source>) -> Option<Pulled> {
    const MORE: usize = 1024;
    match source {
        Some(Source::One(rx)) => {
            let mut items = vec![rx.recv().await?];
            while items.len() < MORE {
                match rx.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
            Some(Pulled::Items(items))
        }
        Some(Source::Runs(rx)) => {
            let first = rx.recv().await?;
            let mut count = first.len();
            let mut runs = vec![first];
            while count < MORE {
                match rx.try_recv() {
                    Ok(run) => {
                        count += run.len();
                        runs.push(run);
                    }
                    Err(_) => break,
                }
            }
            Some(Pulled::Runs(runs))
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
