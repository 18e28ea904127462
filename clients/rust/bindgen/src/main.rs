//! Writes the foreign-language bindings of `sluice-client` from its built
//! library: `uniffi-bindgen generate --library <libsluice_client.so>
//! --language python|kotlin|swift --out-dir <dir>`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
