//! The Entra client half on its own: the pre-check of a key, the MakeCredential arguments
//! built from Graph's creationOptions, and the local verification of an assertion.
