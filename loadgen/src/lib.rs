//! bookbroker's load tools: `sellersim`, a farm of simulated sellers and a payment
//! provider (the [`sim`] module, also run in-process by `bookbroker demo`), and
//! `loadgen`, the customer load generator.

#![warn(missing_docs)]

pub mod sim;
