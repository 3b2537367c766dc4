//! Standalone manifests: loading, validation into the model, directory watching.
