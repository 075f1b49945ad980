//! One scraper actor per node, each with its own persistent connection to its kubelet.
//!
//! A scraper writes only its own node's data; a slow or broken kubelet delays nobody else.
