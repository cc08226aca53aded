//! The `hello-service` binary: the service of `lib.rs`.

fn main() -> std::process::ExitCode {
    hello_service::main()
}
