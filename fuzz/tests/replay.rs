//! Replays every input kept in `fuzz/corpus/<target>/` (what the fuzzers
//! found, crashes included once fixed) through its target, on a 2 MiB stack.

use std::path::Path;

#[test]
fn every_kept_input_runs_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut replayed = 0;
    for (name, target) in carehub_fuzz_harness::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut here = 0;
        for entry in entries {
            let path = entry.expect("entry").path();
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).expect("read");
            let result = std::panic::catch_unwind(|| carehub_fuzz_harness::on_task_stack(&data, *target));
            assert!(result.is_ok(), "{name}: {} fails", path.display());
            here += 1;
        }
        assert!(here > 0, "{name}: no corpus in {}", dir.display());
        replayed += here;
    }
    assert!(replayed >= carehub_fuzz_harness::TARGETS.len());
}
