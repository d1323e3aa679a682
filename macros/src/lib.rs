//! `#[coring::test]`: one test, run on every driver.
//!
//! The attribute turns one function into a `uring_NAME` and a `compat_NAME` test (the io_uring
//! case exists on Linux only, and not at all when the crate is built with
//! `--cfg coring_force_compat`). Inside each case every runtime the test builds on its own
//! thread without naming a driver runs on that case's driver: `coring::block_on`,
//! `Runtime::builder().build()`, the helpers that wrap them.
//!
//! Three shapes are accepted:
//!
//! ```text
//! #[coring::test]
//! async fn reads_what_was_written() { … }          // runs inside one core (block_on)
//!
//! #[coring::test]
//! fn builds_its_own_runtimes() { … }               // runtimes built here use the case's driver
//!
//! #[coring::test]
//! fn starts_a_binary(driver: DriverChoice) { … }   // also told the driver (for child processes)
//! ```
//!
//! Options: `uring_only = "why"` / `compat_only = "why"` (the reason is required and kept in
//! the generated test's docs), and for async tests `cores = N` (the body runs on core 0, the
//! other cores serve cross-core work), `pool_buffers = N`, `pool_bytes = N`; and `serial`: the
//! cases of every `serial` test in one test binary run one at a time (for tests that count
//! what the whole process holds, such as open descriptors).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::{Error, ItemFn, LitInt, LitStr, ReturnType};

/// Expands one test into a `uring_*` and a `compat_*` case. See the crate docs.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(args.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Which drivers a test runs on.
enum Drivers {
    Both,
    UringOnly,
    CompatOnly,
}

#[derive(Default)]
struct Options {
    uring_only: Option<LitStr>,
    compat_only: Option<LitStr>,
    cores: Option<LitInt>,
    pool_buffers: Option<LitInt>,
    pool_bytes: Option<LitInt>,
    serial: bool,
}

impl Options {
    fn parse(args: TokenStream2) -> syn::Result<Options> {
        let mut o = Options::default();
        let parser = syn::meta::parser(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            match key.as_str() {
                "uring_only" => o.uring_only = Some(meta.value()?.parse()?),
                "compat_only" => o.compat_only = Some(meta.value()?.parse()?),
                "cores" => o.cores = Some(meta.value()?.parse()?),
                "pool_buffers" => o.pool_buffers = Some(meta.value()?.parse()?),
                "pool_bytes" => o.pool_bytes = Some(meta.value()?.parse()?),
                "serial" => o.serial = true,
                _ => {
                    return Err(meta.error(
                        "unknown option; expected uring_only, compat_only, cores, \
                         pool_buffers, pool_bytes or serial",
                    ));
                }
            }
            Ok(())
        });
        parser.parse2(args)?;
        for reason in [&o.uring_only, &o.compat_only].into_iter().flatten() {
            if reason.value().trim().is_empty() {
                return Err(Error::new(
                    reason.span(),
                    "say why the test runs on one driver",
                ));
            }
        }
        Ok(o)
    }

    fn drivers(&self) -> syn::Result<Drivers> {
        match (&self.uring_only, &self.compat_only) {
            (None, None) => Ok(Drivers::Both),
            (Some(_), None) => Ok(Drivers::UringOnly),
            (None, Some(_)) => Ok(Drivers::CompatOnly),
            (Some(r), Some(_)) => Err(Error::new(
                r.span(),
                "uring_only and compat_only exclude each other",
            )),
        }
    }

    fn has_runtime_options(&self) -> bool {
        self.cores.is_some() || self.pool_buffers.is_some() || self.pool_bytes.is_some()
    }
}

fn expand(args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let options = Options::parse(args)?;
    let drivers = options.drivers()?;
    let body: ItemFn = syn::parse2(item)?;
    let name = &body.sig.ident;
    let inputs = body.sig.inputs.len();
    let is_async = body.sig.asyncness.is_some();

    if inputs > 1 || (is_async && inputs > 0) {
        return Err(Error::new_spanned(
            &body.sig.inputs,
            "a coring test takes no argument, or (when not async) one DriverChoice",
        ));
    }
    if !is_async && options.has_runtime_options() {
        return Err(Error::new_spanned(
            &body.sig,
            "cores and pool_* apply to async tests; a sync test builds its own runtime",
        ));
    }
    if !body.sig.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &body.sig.generics,
            "a test is not generic",
        ));
    }

    // Outer attributes other than docs (cfg, should_panic, ignore with a reason) apply to each
    // generated case; docs stay on the body.
    let case_attrs: Vec<_> = body
        .attrs
        .iter()
        .filter(|a| !a.path().is_ident("doc"))
        .collect();
    let output = match &body.sig.output {
        ReturnType::Default => quote!(),
        ReturnType::Type(arrow, ty) => quote!(#arrow #ty),
    };

    let run = if is_async {
        let mut settings = quote!(::coring::__test::Settings::default());
        if let Some(cores) = &options.cores {
            settings = quote!(#settings.cores(#cores));
        }
        if options.pool_buffers.is_some() || options.pool_bytes.is_some() {
            let buffers = options
                .pool_buffers
                .clone()
                .unwrap_or_else(|| LitInt::new("0", Span::call_site()));
            let bytes = options
                .pool_bytes
                .clone()
                .unwrap_or_else(|| LitInt::new("0", Span::call_site()));
            settings = quote!(#settings.buffer_pool(#buffers, #bytes));
        }
        quote!(::coring::__test::run_async(driver, #settings, #name))
    } else if inputs == 1 {
        quote!(::coring::__test::run_sync(driver, || #name(driver)))
    } else {
        quote!(::coring::__test::run_sync(driver, #name))
    };

    let serial = options.serial;
    let run = quote!(::coring::__test::serialized(#serial, || #run));

    let uring_case = format_ident!("uring_{}", name);
    let compat_case = format_ident!("compat_{}", name);
    let uring_doc = format!("`{name}` on the io_uring driver.");
    let compat_doc = format!("`{name}` on the compat (readiness) driver.");
    let uring = quote! {
        #[doc = #uring_doc]
        #[cfg(all(target_os = "linux", not(coring_force_compat)))]
        #[test]
        #(#case_attrs)*
        fn #uring_case() #output {
            let driver = ::coring::driver::probe::DriverChoice::Uring;
            #run
        }
    };
    let compat = quote! {
        #[doc = #compat_doc]
        #[test]
        #(#case_attrs)*
        fn #compat_case() #output {
            let driver = ::coring::driver::probe::DriverChoice::Compat;
            #run
        }
    };
    let (cases, body_allow) = match drivers {
        Drivers::Both => (quote!(#uring #compat), quote!()),
        Drivers::UringOnly => {
            let reason = options.uring_only.as_ref().map(LitStr::value);
            let doc = format!("io_uring only: {}", reason.unwrap_or_default());
            (
                quote!(#[doc = #doc] #uring),
                // The body is unused where the io_uring case does not exist.
                quote!(#[cfg_attr(
                    not(all(target_os = "linux", not(coring_force_compat))),
                    allow(dead_code)
                )]),
            )
        }
        Drivers::CompatOnly => {
            let reason = options.compat_only.as_ref().map(LitStr::value);
            let doc = format!("compat only: {}", reason.unwrap_or_default());
            (quote!(#[doc = #doc] #compat), quote!())
        }
    };
    let (body_attrs, rest) = (&body.attrs, &body);
    let vis = &rest.vis;
    let sig = &rest.sig;
    let block = &rest.block;
    let cfgs = body_attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let docs = body_attrs.iter().filter(|a| a.path().is_ident("doc"));
    Ok(quote! {
        #(#docs)*
        #(#cfgs)*
        #body_allow
        #vis #sig #block
        #cases
    })
}
