//! A program that forgot `powerpool::init()` gets a clear error when it builds a pool, never a
//! worker that runs its `main` again (which would start pools of its own, recursively).

fn double(x: u64) -> u64 {
    x * 2
}
powerpool::task!(DOUBLE: fn(u64) -> u64 = double);

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let tests = vec![libtest_mimic::Trial::test("building_a_pool_without_init_is_refused", || {
        let err = powerpool::Pool::new().expect_err("refused");
        let text = err.to_string();
        if !text.contains("powerpool::init()") {
            return Err(format!("the error does not say what to do: {text}").into());
        }
        // And nothing was spawned: this process has no children.
        let me = std::process::id();
        let kids = powerpool_tests::children_of(me);
        if !kids.is_empty() {
            return Err(format!("children were started: {kids:?}").into());
        }
        let _ = DOUBLE.name();
        Ok(())
    })];
    libtest_mimic::run(&args, tests).exit();
}
