//! Placeholder: written by the edge work (issue 5).
