//! ceremony layer.
