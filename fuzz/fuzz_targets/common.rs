//! A compiled snapshot over testing/v1/everything.proto, built once.

use std::sync::OnceLock;

use protogate::route::{RouteMatch, RouteTable};
use protogate::snapshot::Compiled;
use protogate::transcode;

pub fn table() -> &'static RouteTable {
    &compiled().routes
}

/// The transcoding plan of a found binding (not every target needs it).
#[allow(dead_code)]
pub fn plan(found: &RouteMatch) -> &'static transcode::Plan {
    &compiled().plans.get(found.binding).transcode
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.toml");
        let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
        std::fs::write(
            &path,
            format!(
                "[proto]\nfiles = [\"testing/v1/everything.proto\"]\ninclude = [\"{proto}\"]\n\
                 [upstreams.echo]\nendpoints = [\"http://127.0.0.1:1\"]\n\
                 [[routes]]\nservice = \"testing.v1.EverythingService\"\nupstream = \"echo\"\nauth = \"none\"\n"
            ),
        )
        .expect("write");
        let loaded = protogate::config::load(&path).expect("parses");
        protogate::snapshot::compile(&loaded).expect("compiles")
    })
}
