//! The standard library: `.post` sources embedded in the compiler, so checking a file needs no
//! disk access for them. `use std.objectives.{grpo}` imports from these modules.

use std::sync::OnceLock;

use crate::syntax::{self, ast::File};

/// (module name, path in the repository, source).
pub const MODULES: &[(&str, &str, &str)] = &[
    (
        "std.objectives",
        "stdlib/objectives.post",
        include_str!("../../stdlib/objectives.post"),
    ),
    (
        "std.rewards",
        "stdlib/rewards.post",
        include_str!("../../stdlib/rewards.post"),
    ),
    (
        "std.rollouts",
        "stdlib/rollouts.post",
        include_str!("../../stdlib/rollouts.post"),
    ),
];

/// The parsed standard library modules, parsed once per process.
pub fn parsed() -> &'static [(&'static str, File)] {
    static PARSED: OnceLock<Vec<(&'static str, File)>> = OnceLock::new();
    PARSED.get_or_init(|| {
        MODULES
            .iter()
            .map(|(name, _, src)| (*name, syntax::parse(src).file))
            .collect()
    })
}

/// (module, name) of every definition of the standard library, for "did you mean" hints.
pub fn definitions() -> impl Iterator<Item = (&'static str, &'static str)> {
    parsed().iter().flat_map(|(m, f)| {
        f.items.iter().filter_map(move |i| match i {
            crate::syntax::ast::Item::Def(d) => Some((*m, d.name.name.as_str())),
            _ => None,
        })
    })
}

/// Which stdlib module defines `name`, for "import it" hints.
pub fn module_defining(name: &str) -> Option<&'static str> {
    parsed().iter().find_map(|(m, f)| {
        f.items
            .iter()
            .any(|i| matches!(i, crate::syntax::ast::Item::Def(d) if d.name.name == name))
            .then_some(*m)
    })
}
