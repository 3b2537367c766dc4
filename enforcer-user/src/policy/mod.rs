//! NetworkPolicy compiler (pure): cluster model -> desired BPF map state, and diffs.
