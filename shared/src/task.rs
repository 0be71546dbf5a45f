//! The catalogue of built-in tasks: what the coordinator validates and lists. The worker crate
//! holds their implementations and is tested to implement every entry here.

/// Set to `1` to enable the hidden test tasks, in the coordinator and in its workers. Never needed
/// by a user; `powerpool tasks` does not list them.
pub const TEST_TASKS_ENV: &str = "POWERPOOL_TEST_TASKS";

/// With [`TEST_TASKS_ENV`] set to `1`: the slot numbers (comma-separated) of the first
/// workers the zygote is to report it could not fork, so that tests reach the path where they
/// are executed instead.
pub const TEST_FAIL_FORK_ENV: &str = "POWERPOOL_TEST_FAIL_FORK";

/// What a task takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// An `i64` input to an `i128` result (`map`).
    Int,
    /// A body of bytes to a line of text (`fetch --process`).
    Bytes,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Int => "int",
            TaskKind::Bytes => "bytes",
        }
    }
}

/// One built-in task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: &'static str,
    pub kind: TaskKind,
    pub about: &'static str,
    /// Test tasks exist for the test suite only: they are listed nowhere and accepted only when
    /// [`TEST_TASKS_ENV`] is `1`.
    pub test_only: bool,
}

/// Every built-in task, user-facing ones first.
pub const TASKS: &[TaskSpec] = &[
    TaskSpec {
        name: "square",
        kind: TaskKind::Int,
        about: "x -> x*x, exact for every i64 (128-bit result)",
        test_only: false,
    },
    TaskSpec {
        name: "collatz",
        kind: TaskKind::Int,
        about: "x -> steps of the Collatz map from |x| to 1 (0 for 0 and 1); CPU-heavy",
        test_only: false,
    },
    TaskSpec {
        name: "sha256",
        kind: TaskKind::Bytes,
        about: "body -> its SHA-256 digest, in hex",
        test_only: false,
    },
    TaskSpec {
        name: "wc",
        kind: TaskKind::Bytes,
        about: "body -> `lines words bytes`, counted as `wc` counts them",
        test_only: false,
    },
    TaskSpec {
        name: "slow-square",
        kind: TaskKind::Int,
        about: "square after sleeping 1 ms per item (tests: a run long enough to disturb)",
        test_only: true,
    },
    TaskSpec {
        name: "empty",
        kind: TaskKind::Bytes,
        about: "body -> the empty string (tests: an empty result is a result, not a failure)",
        test_only: true,
    },
    TaskSpec {
        name: "poison-bytes",
        kind: TaskKind::Bytes,
        about: "wc, but a body that starts with `panic` panics and one that starts with `segv` \
                segfaults (tests: poison items are isolated on the item path)",
        test_only: true,
    },
];

/// Whether the hidden test tasks are enabled in this process's environment.
pub fn test_tasks_enabled() -> bool {
    std::env::var_os(TEST_TASKS_ENV).is_some_and(|v| v == "1")
}

/// Looks a task up by name, honouring [`test_tasks_enabled`].
pub fn find(name: &str) -> Option<&'static TaskSpec> {
    TASKS.iter().find(|t| t.name == name && (!t.test_only || test_tasks_enabled()))
}

/// The tasks a user may see.
pub fn public() -> impl Iterator<Item = &'static TaskSpec> {
    TASKS.iter().filter(|t| !t.test_only)
}

/// A hidden test task that fails at chosen items, for the fault tests and `scripts/chaos`:
/// `fault-KIND@ITEM[,ITEM...]` fails at every listed item, every time; `flaky-KIND@ITEM...`
/// fails at each listed item only the first time any worker of the run meets it (a marker file
/// in [`FLAKY_DIR_ENV`] remembers). Every other item is squared. Accepted only when
/// [`TEST_TASKS_ENV`] is `1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub kind: FaultKind,
    pub flaky: bool,
    pub items: Vec<i64>,
}

/// Where `flaky-*` test tasks keep their marker files (one per item already failed).
pub const FLAKY_DIR_ENV: &str = "POWERPOOL_FLAKY_DIR";

/// How a fault task fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A Rust panic (caught by the worker, which stays up).
    Panic,
    /// `abort()`: SIGABRT.
    Abort,
    /// A null-pointer write: SIGSEGV.
    Segv,
    /// `exit(3)` in the middle of a chunk.
    Exit,
    /// Sleeps forever (ended by `--task-timeout`).
    Hang,
    /// Allocates past an address-space rlimit: the allocator aborts the process.
    Oom,
    /// SIGKILL to itself, as the kernel's OOM killer does.
    Kill,
}

impl FaultKind {
    const NAMES: [(&'static str, FaultKind); 7] = [
        ("panic", FaultKind::Panic),
        ("abort", FaultKind::Abort),
        ("segv", FaultKind::Segv),
        ("exit", FaultKind::Exit),
        ("hang", FaultKind::Hang),
        ("oom", FaultKind::Oom),
        ("kill", FaultKind::Kill),
    ];
}

impl FaultSpec {
    /// Parses a fault task name; `None` if `name` is not one.
    ///
    /// ```
    /// use powerpool_shared::task::{FaultKind, FaultSpec};
    /// let spec = FaultSpec::parse("flaky-segv@7,-3").unwrap();
    /// assert_eq!((spec.kind, spec.flaky, spec.items), (FaultKind::Segv, true, vec![7, -3]));
    /// assert!(FaultSpec::parse("fault-nope@1").is_none());
    /// ```
    pub fn parse(name: &str) -> Option<FaultSpec> {
        let (head, items) = name.split_once('@')?;
        let (flaky, kind) = match head.split_once('-')? {
            ("fault", kind) => (false, kind),
            ("flaky", kind) => (true, kind),
            _ => return None,
        };
        let kind = FaultKind::NAMES.iter().find(|(n, _)| *n == kind)?.1;
        let items: Option<Vec<i64>> = items.split(',').map(|i| i.parse().ok()).collect();
        let items = items.filter(|v| !v.is_empty() && v.len() <= 1024)?;
        Some(FaultSpec { kind, flaky, items })
    }
}

/// The kind of task `name` is, if this process may ask workers for it: a catalogue task, or a
/// fault task (an `Int` task) when the test tasks are enabled.
pub fn kind_of(name: &str) -> Option<TaskKind> {
    match find(name) {
        Some(spec) => Some(spec.kind),
        None => (test_tasks_enabled() && FaultSpec::parse(name).is_some()).then_some(TaskKind::Int),
    }
}
