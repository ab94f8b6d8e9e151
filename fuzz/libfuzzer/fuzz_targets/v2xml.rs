#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    carehub_fuzz_harness::on_task_stack(data, carehub_fuzz_harness::v2xml);
});
