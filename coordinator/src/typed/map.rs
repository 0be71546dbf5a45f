//! The calls a pool offers: `map` (blocking iterator), `map_stream` (async stream), `submit`.

use super::call::{Call, Progress};
use super::pool::Pool;
use super::task::{Task, TaskError};
use futures::Stream;
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

impl Pool {
    /// `task` over every item of `inputs`, pulled lazily (at most the pool's window ahead of
    /// what was handed back): a blocking iterator of results in input order. By default it
    /// ends after the first failed item (yielded as `Err`); [`Map::keep_going`] yields every
    /// item's result instead. Needs no runtime (inside one, use [`Pool::map_stream`]).
    pub fn map<T, R, I>(&self, task: &Task<T, R>, inputs: I) -> Map<I::IntoIter, T, R>
    where
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: DeserializeOwned,
    {
        Map {
            call: Call::new(self, task),
            inputs: inputs.into_iter(),
            exhausted: false,
            keep_going: false,
            done: false,
            _types: PhantomData,
        }
    }

    /// `task` over an async stream of inputs: a stream of results in input order, stopping
    /// after the first failed item unless [`MapStream::keep_going`].
    pub fn map_stream<T, R, S>(&self, task: &Task<T, R>, inputs: S) -> MapStream<S, T, R>
    where
        S: Stream<Item = T> + Unpin,
        T: Serialize + DeserializeOwned,
        R: DeserializeOwned,
    {
        MapStream {
            call: Call::new(self, task),
            inputs,
            exhausted: false,
            keep_going: false,
            done: false,
            _types: PhantomData,
        }
    }

    /// `task` on one input; many submits share the workers. The handle is awaited (`.await`)
    /// or joined (blocking).
    pub fn submit<T, R>(&self, task: &Task<T, R>, input: T) -> Submitted<R>
    where
        T: Serialize + DeserializeOwned,
        R: DeserializeOwned,
    {
        let mut call = Call::new(self, task);
        call.push(&input);
        call.flush();
        Submitted { call, _types: PhantomData }
    }
}

/// The results of [`Pool::map`], in input order.
pub struct Map<I, T, R> {
    call: Call,
    inputs: I,
    exhausted: bool,
    keep_going: bool,
    done: bool,
    _types: PhantomData<fn(T) -> R>,
}

impl<I, T, R> std::fmt::Debug for Map<I, T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map").field("call", &self.call).finish_non_exhaustive()
    }
}

impl<I, T, R> Map<I, T, R>
where
    I: Iterator<Item = T>,
    T: Serialize + DeserializeOwned,
    R: DeserializeOwned,
{
    /// Yield every item's result, `Err` for those that failed, so results stay aligned with
    /// inputs; the default stops after the first failure.
    pub fn keep_going(mut self) -> Self {
        self.keep_going = true;
        self
    }

    /// Results as they are computed, each with its input's place (and every item's, as with
    /// [`Map::keep_going`]).
    pub fn unordered(mut self) -> Unordered<I, T, R> {
        self.call.set_unordered();
        Unordered { map: self }
    }

    /// Calls `hook` with the call's counts and rate, at most every 100 ms and at the end.
    pub fn progress(mut self, hook: impl FnMut(&Progress) + Send + 'static) -> Self {
        self.call.set_hook(Box::new(hook));
        self
    }

    /// The next answer, in input order or not.
    fn next_answer(&mut self, ordered: bool) -> Option<(u64, Result<R, TaskError>)> {
        if self.done {
            return None;
        }
        loop {
            while !self.exhausted && self.call.has_room() {
                match self.inputs.next() {
                    Some(input) => self.call.push(&input),
                    None => self.exhausted = true,
                }
            }
            if let Some(answer) = self.call.take(ordered) {
                return Some(answer);
            }
            if self.exhausted && self.call.is_drained() {
                self.done = true;
                self.call.report(true);
                return None;
            }
            self.call.flush();
            // Blocking is what a runtime thread must not do (a single-threaded runtime would
            // wait on itself): checked here, before the first wait.
            if let Some(err) = self.call.inside_runtime() {
                self.done = true;
                return Some((0, Err(err)));
            }
            if !self.call.wait() {
                self.done = true;
                return None;
            }
        }
    }
}

impl<I, T, R> Iterator for Map<I, T, R>
where
    I: Iterator<Item = T>,
    T: Serialize + DeserializeOwned,
    R: DeserializeOwned,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (_, result) = self.next_answer(true)?;
        if result.is_err() && !self.keep_going {
            self.done = true;
        }
        Some(result)
    }
}

/// The results of [`Map::unordered`]: `(place, result)` as computed.
pub struct Unordered<I, T, R> {
    map: Map<I, T, R>,
}

impl<I, T, R> std::fmt::Debug for Unordered<I, T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

impl<I, T, R> Iterator for Unordered<I, T, R>
where
    I: Iterator<Item = T>,
    T: Serialize + DeserializeOwned,
    R: DeserializeOwned,
{
    type Item = (u64, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        self.map.next_answer(false)
    }
}

/// The results of [`Pool::map_stream`], in input order.
pub struct MapStream<S, T, R> {
    call: Call,
    inputs: S,
    exhausted: bool,
    keep_going: bool,
    done: bool,
    _types: PhantomData<fn(T) -> R>,
}

impl<S, T, R> std::fmt::Debug for MapStream<S, T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStream").field("call", &self.call).finish_non_exhaustive()
    }
}

impl<S, T, R> MapStream<S, T, R> {
    /// Yield every item's result; the default stops after the first failure.
    pub fn keep_going(mut self) -> Self {
        self.keep_going = true;
        self
    }

    /// Calls `hook` with the call's counts and rate, at most every 100 ms and at the end.
    pub fn progress(mut self, hook: impl FnMut(&Progress) + Send + 'static) -> Self {
        self.call.set_hook(Box::new(hook));
        self
    }
}

impl<S, T, R> Stream for MapStream<S, T, R>
where
    S: Stream<Item = T> + Unpin,
    T: Serialize + DeserializeOwned,
    R: DeserializeOwned,
{
    type Item = Result<R, TaskError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Every field is Unpin (`S: Unpin`, the rest plain data).
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            while !this.exhausted && this.call.has_room() {
                match Pin::new(&mut this.inputs).poll_next(cx) {
                    Poll::Ready(Some(input)) => this.call.push(&input),
                    Poll::Ready(None) => this.exhausted = true,
                    Poll::Pending => break,
                }
            }
            if let Some((_, result)) = this.call.take::<R>(true) {
                if result.is_err() && !this.keep_going {
                    this.done = true;
                }
                return Poll::Ready(Some(result));
            }
            if this.exhausted && this.call.is_drained() {
                this.done = true;
                this.call.report(true);
                return Poll::Ready(None);
            }
            this.call.flush();
            match this.call.poll_wait(cx) {
                Poll::Ready(true) => {}
                Poll::Ready(false) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One submitted item: `.await` it, or [`Submitted::join`] it.
pub struct Submitted<R> {
    call: Call,
    _types: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Submitted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitted").field("call", &self.call).finish()
    }
}

impl<R: DeserializeOwned> Submitted<R> {
    /// Waits for the result (blocking; not inside an async runtime: `.await` there).
    pub fn join(mut self) -> Result<R, TaskError> {
        if let Some(err) = self.call.inside_runtime() {
            return Err(err);
        }
        loop {
            if let Some((_, result)) = self.call.take(true) {
                return result;
            }
            if !self.call.wait() {
                return Err(self.ended());
            }
        }
    }

    fn ended(&self) -> TaskError {
        TaskError { index: 0, task: "", reason: "the pool stopped".to_owned() }
    }
}

impl<R: DeserializeOwned> Future for Submitted<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some((_, result)) = this.call.take(true) {
                return Poll::Ready(result);
            }
            match this.call.poll_wait(cx) {
                Poll::Ready(true) => {}
                Poll::Ready(false) => return Poll::Ready(Err(this.ended())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
