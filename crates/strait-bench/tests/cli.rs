//! `strait-bench compare`'s CPU options are checked before anything starts: a bad list or a
//! contradiction ends the program with a clear error at once (no tools needed, none run).

use std::process::{Command, Output};

fn compare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strait-bench"))
        .arg("compare")
        .args(args)
        .output()
        .expect("strait-bench runs")
}

#[test]
fn a_cpu_the_machine_lacks_is_refused_by_name() {
    let out = compare(&["--quick", "--gateway-cpus", "0,100000"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CPU 100000 in \"0,100000\" does not exist here"),
        "{stderr}"
    );
}

#[test]
fn a_list_that_is_not_one_is_refused() {
    let out = compare(&["--quick", "--load-cpus", "2-1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("runs backwards"), "{stderr}");
}

#[test]
fn no_pin_and_a_cpu_list_contradict() {
    let out = compare(&["--quick", "--no-pin", "--backend-cpus", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
