//! The `tracer` binary (and `kubectl-tracer`): all of it is the library's [`tracer::main`].

#![expect(unused_crate_dependencies, reason = "the library uses them; this file only calls it")]

fn main() -> std::process::ExitCode {
    tracer::main()
}
