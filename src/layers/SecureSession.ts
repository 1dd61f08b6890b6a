/**
 * The seam between the socket and the framing. After the plain-text preamble, every connection's ByteStream is
 * passed through `SecureSession.upgrade`; an encrypting implementation returns a ByteStream that encrypts what is
 * written and decrypts what is received. The default `plain` layer returns the stream unchanged.
 */
import { Context, Effect, Layer } from "effect"
import type { ByteStream } from "../actors/Connection.js"
import type { ConnectionLost, HandshakeFailed } from "../schema/errors.js"

export class SecureSession extends Context.Tag("effect-p2pnet/SecureSession")<
  SecureSession,
  {
    readonly name: string
    readonly upgrade: (
      stream: ByteStream,
      role: "initiator" | "responder"
    ) => Effect.Effect<ByteStream, ConnectionLost | HandshakeFailed>
  }
>() {
  static readonly plain = Layer.succeed(this, this.of({ name: "plain", upgrade: (stream) => Effect.succeed(stream) }))
}
