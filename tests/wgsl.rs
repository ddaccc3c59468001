//! Every kernel parses and validates with naga (the shader compiler inside wgpu) on a machine
//! with no GPU at all, and carries the header the design asks for.

use tinfer::gpu::kernels::{sources, web_source};

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

/// Browser builds: exactly the kernels that call subgroup builtins get the WGSL extension
/// directive `enable subgroups;` first (browsers refuse them without it); the rest are as
/// native builds compile them.
#[test]
fn web_sources_enable_subgroups_where_used() {
    const DIRECTIVE: &str = "enable subgroups;\n";
    let mut with = vec![];
    for (file, src) in sources() {
        let web = web_source(&src);
        match web.strip_prefix(DIRECTIVE) {
            Some(rest) => {
                assert_eq!(rest, src, "{file}: only the directive is added");
                with.push(file);
            }
            None => assert_eq!(web, src, "{file}: unchanged"),
        }
    }
    with.sort();
    assert_eq!(
        with,
        [
            "attention_flash_sg.wgsl",
            "matmat.wgsl",
            "matvec.wgsl",
            "subgroup_probe.wgsl"
        ],
        "the kernels calling subgroup builtins"
    );
}
