//! The typed handle of a task, and the errors of its items.

use powerpool_worker::typed::TASKS;
use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// A task from `T` to `R`, declared once with [`task!`](crate::task): `map` and `submit` take
/// it, so input and output types are checked at compile time, and a task that was not declared
/// cannot be named.
pub struct Task<T, R> {
    name: &'static str,
    index: OnceLock<u32>,
    _types: PhantomData<fn(T) -> R>,
}

impl<T, R> Task<T, R> {
    #[doc(hidden)]
    pub const fn __new(name: &'static str) -> Task<T, R> {
        Task { name, index: OnceLock::new(), _types: PhantomData }
    }

    /// The task's name: its module path and the handle's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its place among the program's tasks, the same in every process of the program.
    pub(crate) fn index(&self) -> u32 {
        *self.index.get_or_init(|| {
            let at = TASKS.iter().position(|entry| entry.name == self.name);
            // `task!` puts the entry in TASKS beside the handle: it is there.
            let at = at.expect("every Task is declared by task!, which registers it");
            u32::try_from(at).expect("fewer than 2^32 tasks")
        })
    }
}

impl<T, R> fmt::Debug for Task<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task").field("name", &self.name).finish()
    }
}

/// Why one item has no result: its task panicked (the message, with the backtrace when
/// `RUST_BACKTRACE` is set), its worker died (the signal or status) or overran the timeout,
/// every time it was tried; or its input or result could not travel; or the pool stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// The item's place in its call's input, from 0.
    pub index: u64,
    pub task: &'static str,
    pub reason: String,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} failed on item {}: {}", self.task, self.index, self.reason)
    }
}

impl std::error::Error for TaskError {}

/// Declares a typed task: a static handle to pass to `map` and `submit`, and its registration
/// in the program's task table, which worker processes (this same executable) find at start.
///
/// A plain function (or a non-capturing closure):
///
/// ```
/// fn shout(s: String) -> String {
///     s.to_uppercase()
/// }
/// powerpool::task!(pub SHOUT: fn(String) -> String = shout);
/// ```
///
/// With per-worker state, made once in each worker process by `init` (and again in a worker
/// that replaces one that died or was recycled); the task gets it by reference:
///
/// ```
/// struct Model { weight: f64 }
/// fn load() -> Model {
///     Model { weight: 2.0 }
/// }
/// fn score(model: &Model, x: f64) -> f64 {
///     model.weight * x
/// }
/// powerpool::task!(SCORE: fn(&Model, f64) -> f64 = score, init = load);
/// ```
#[macro_export]
macro_rules! task {
    ($(#[$meta:meta])* $vis:vis $name:ident : fn($input:ty) -> $output:ty = $f:expr $(,)?) => {
        $(#[$meta])*
        $vis static $name: $crate::Task<$input, $output> =
            $crate::Task::__new(concat!(module_path!(), "::", stringify!($name)));
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::TASKS)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::__private::TaskEntry = $crate::__private::TaskEntry {
                name: concat!(module_path!(), "::", stringify!($name)),
                call: |state, span| {
                    $crate::__private::call_plain::<$input, $output>(
                        concat!(module_path!(), "::", stringify!($name)),
                        $f,
                        state,
                        span,
                    )
                },
            };
        };
    };
    ($(#[$meta:meta])* $vis:vis $name:ident : fn(&$state:ty, $input:ty) -> $output:ty = $f:expr,
     init = $init:expr $(,)?) => {
        $(#[$meta])*
        $vis static $name: $crate::Task<$input, $output> =
            $crate::Task::__new(concat!(module_path!(), "::", stringify!($name)));
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::TASKS)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::__private::TaskEntry = $crate::__private::TaskEntry {
                name: concat!(module_path!(), "::", stringify!($name)),
                call: |state, span| {
                    $crate::__private::call_with_state::<$state, $input, $output>(
                        concat!(module_path!(), "::", stringify!($name)),
                        $init,
                        $f,
                        state,
                        span,
                    )
                },
            };
        };
    };
}
