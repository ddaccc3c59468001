//! Every kernel parses and validates with naga (the shader compiler inside wgpu) on a machine
//! with no GPU at all, and carries the header the design asks for.

use tinfer::gpu::kernels::sources;

#[test]
fn every_shader_parses_and_validates() {
    let mut n = 0;
    for (file, src) in sources() {
        let module =
            naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(&src)));
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        v.validate(&module)
            .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(&src)));
        n += 1;
    }
    assert_eq!(
        n,
        // TINFER_ROOT: the checkout, where a packaged test binary runs away from its build tree
        std::fs::read_dir(
            std::env::var_os("TINFER_ROOT")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
                .join("shaders")
        )
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count()
            - 1,
        "every file in shaders/ (besides the prelude; libraries in shaders/lib) is compiled in"
    );
}

#[test]
fn every_shader_has_its_header() {
    for (file, src) in sources() {
        let header: String = src
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for needle in [file, "CPU twin:", "Dispatch:", "Bindings:", "Overrides:"] {
            assert!(header.contains(needle), "{file}: the header should mention {needle:?}");
        }
    }
}
