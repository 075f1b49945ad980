//! Command-line flags, named as upstream metrics-server names them.
