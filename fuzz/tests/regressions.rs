//! Every input a fuzzer once crashed a target with, replayed through the
//! target in every test run: `fuzz/regressions/TARGET/NAME`. A crash found
//! by `scripts/fuzz.sh` is fixed and its input saved here (the script says
//! where the input is).

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("packets", lb_fuzz::packets::run),
    ("forward", lb_fuzz::forward::run),
    ("state_file", lb_fuzz::state_file::run),
    ("grpc_api", lb_fuzz::grpc_api::run),
    ("health_replies", lb_fuzz::health_replies::run),
];

#[test]
fn saved_crashes_run_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for (name, run) in TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            eprintln!("{name}: {}", path.display());
            run(&input);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no saved input under {}", root.display());
}

#[test]
fn edge_inputs_run_clean() {
    let inputs: [&[u8]; 5] = [b"", b"\0", b"\xff\xff\xff", &[0; 100], &[0xff; 1600]];
    for (_, run) in TARGETS {
        for input in inputs {
            run(input);
        }
    }
}
