//! Test fixtures shared by the k3rs cross-daemon tests and the bench program.
