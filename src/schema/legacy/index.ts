/**
 * The legacy (P2PNet .NET) wire format: the .NET-exact JSON writer, the packets and their frames, the tolerant stream
 * parser, NetworkTasks and the LAN discovery datagram. Pure data and codecs; the compatibility profile wires them in.
 */
export * from "./errors.js"
export * from "./json.js"
export * from "./packets.js"
export * from "./stream.js"
export * from "./tasks.js"
export * from "./discovery.js"
