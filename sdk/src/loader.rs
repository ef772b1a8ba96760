//! The loader world: a trait for dataset loaders and the macro that exports one.

use crate::types::{DatasetInfo, Sample};

/// A dataset loader with random access.
///
/// `open` sees only the files and directories the experiment granted, read-only
/// (through WASI), under the names given in `files`. Errors should name the
/// file and line (or row) at fault.
pub trait Loader: Sized + 'static {
    /// Opens the dataset. `config` is the plugin's TOML table as TOML text.
    fn open(config: &str, files: &[String]) -> Result<(Self, DatasetInfo), String>;

    /// Sample `index` (0-based, `< DatasetInfo::len`).
    fn get(&self, index: u64) -> Result<Sample, String>;

    /// Several samples, in order. Override it if a batch can be read faster.
    fn get_many(&self, indices: &[u64]) -> Vec<Result<Sample, String>> {
        indices.iter().map(|&i| self.get(i)).collect()
    }
}

/// Exports a [`Loader`] type as the `loader` interface of the component.
/// Needs the SDK's `loader` cargo feature.
#[cfg(feature = "loader")]
#[macro_export]
macro_rules! export_loader {
    ($ty:ty) => {
        // Native builds of a plugin crate (tests, clippy) export nothing: the
        // component export names are not valid native linker symbols. The
        // reference keeps the plugin type from counting as dead code there.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::Loader>::open;
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct LmmhostLoaderExport;
            impl $crate::bindings::loader::exports::lmmhost::plugin::loader::Guest
                for LmmhostLoaderExport
            {
                fn open(
                    config: ::std::string::String,
                    files: ::std::vec::Vec<::std::string::String>,
                ) -> ::core::result::Result<$crate::types::DatasetInfo, ::std::string::String> {
                    $crate::loader::__glue::open::<$ty>(&STATE, &config, &files)
                }
                fn get(index: u64) -> ::core::result::Result<$crate::types::Sample, ::std::string::String> {
                    $crate::loader::__glue::get::<$ty>(&STATE, index)
                }
                fn get_many(
                    indices: ::std::vec::Vec<u64>,
                ) -> ::std::vec::Vec<::core::result::Result<$crate::types::Sample, ::std::string::String>> {
                    $crate::loader::__glue::get_many::<$ty>(&STATE, &indices)
                }
            }
            $crate::bindings::loader::__lmmhost_export_loader_world!(LmmhostLoaderExport with_types_in $crate::bindings::loader);
        };
    };
}

#[doc(hidden)]
pub mod __glue {
    use super::Loader;
    use crate::types::{DatasetInfo, Sample};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    type State<T> = LocalKey<RefCell<Option<T>>>;

    const NOT_OPEN: &str = "loader plugin used before `open`";

    pub fn open<T: Loader>(
        state: &'static State<T>,
        config: &str,
        files: &[String],
    ) -> Result<DatasetInfo, String> {
        let (loader, info) = T::open(config, files)?;
        state.with(|s| *s.borrow_mut() = Some(loader));
        Ok(info)
    }

    pub fn get<T: Loader>(state: &'static State<T>, index: u64) -> Result<Sample, String> {
        state.with(|s| match &*s.borrow() {
            Some(l) => l.get(index),
            None => Err(NOT_OPEN.to_owned()),
        })
    }

    pub fn get_many<T: Loader>(
        state: &'static State<T>,
        indices: &[u64],
    ) -> Vec<Result<Sample, String>> {
        state.with(|s| match &*s.borrow() {
            Some(l) => l.get_many(indices),
            None => indices.iter().map(|_| Err(NOT_OPEN.to_owned())).collect(),
        })
    }
}
