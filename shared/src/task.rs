//! The catalogue of built-in tasks: what the coordinator validates and lists. The worker crate
//! holds their implementations and is tested to implement every entry here.

/// Set to `1` to enable the hidden test tasks, in the coordinator and in its workers. Never needed
/// by a user; `powerpool tasks` does not list them.
pub const TEST_TASKS_ENV: &str = "POWERPOOL_TEST_TASKS";

/// One built-in task: a function from an `i64` input to an `i128` result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: &'static str,
    pub about: &'static str,
    /// Test tasks exist for the test suite only: they are listed nowhere and accepted only when
    /// [`TEST_TASKS_ENV`] is `1`.
    pub test_only: bool,
}

/// Every built-in task, user-facing ones first.
pub const TASKS: &[TaskSpec] = &[
    TaskSpec {
        name: "square",
        about: "x -> x*x, exact for every i64 (128-bit result)",
        test_only: false,
    },
    TaskSpec {
        name: "slow-square",
        about: "square after sleeping 1 ms per item (tests: a run long enough to disturb)",
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
