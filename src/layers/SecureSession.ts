/**
 * The seam between the socket and the framing. Every connection's ByteStream passes through `SecureSession.upgrade`
 * right after the TCP connect: it writes this node's preamble, checks the remote's (`opening`), and returns the stream
 * the framing runs on. The default, `layer`, follows NetworkSettings.session: the Noise session (NoiseSession.ts,
 * encrypted and authenticated, bound to the node key) unless "plain" was chosen explicitly, which returns the stream
 * unchanged. Both sides must choose the same; a mismatch is refused with a reason (SessionMismatch), never downgraded.
 *
 * A session may hold back its last handshake bytes until the first write on the stream it returns, so that they
 * share one socket write (the Noise initiator's message 3 in XX leads its Hello, the responder's message 2 in IK leads
 * the responder's Hello). A side with nothing to send can write an empty list of chunks to flush them.
 */
import { Context, Effect, Layer } from "effect"
import type { ByteStream, EarlyFrame } from "../actors/Connection.js"
import type {
  ConnectionLost,
  HandshakeFailed,
  PeerIdentityMismatch,
  ProtocolMismatch,
  SessionMismatch
} from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import type { SessionName } from "../schema/wire.js"

/** What the connection opening gives a session: the preamble to send first and how to check the remote's. */
export interface Opening {
  /** This node's preamble (it announces the session). Written before or with the session's first message. */
  readonly preamble: Uint8Array
  /**
   * Reads and checks the remote's preamble; run before the session's first read. A mismatch is answered with a plain
   * Reject, preceded by this node's preamble when `preambleSent` is false (a session that sends its preamble with its
   * first handshake message, as the Noise responder does).
   */
  readonly remotePreamble: (
    preambleSent: boolean
  ) => Effect.Effect<void, ProtocolMismatch | SessionMismatch | ConnectionLost>
  /** The node this connection was dialled for, when known: a session that authenticates peers must refuse others. */
  readonly expectedPeer?: NodeId
  /**
   * Initiator, to a session that `carriesEarly`: makes its first frame (a Hello; a new one each call, each sent once).
   * The session sends one itself, inside or right after its handshake, and names it in `earlySent` on the stream it
   * returns. It may make one ahead, for the next connection to the same address (see NoiseSession's prepared
   * openings), so the frame sent may come from an earlier call.
   */
  readonly early?: () => EarlyFrame
}

export type UpgradeError = ConnectionLost | HandshakeFailed | ProtocolMismatch | SessionMismatch | PeerIdentityMismatch

export class SecureSession extends Context.Tag("effect-p2pnet/SecureSession")<
  SecureSession,
  {
    readonly name: SessionName
    /**
     * The session sends the initiator's first frame itself (Opening.early); otherwise the caller makes it before the
     * upgrade and sends it after.
     */
    readonly carriesEarly?: boolean
    readonly upgrade: (
      stream: ByteStream,
      role: "initiator" | "responder",
      opening: Opening
    ) => Effect.Effect<ByteStream, UpgradeError>
  }
>() {
  /** Clear text: frames go over the socket as they are. Only for debugging and the compatibility profile. */
  static readonly plain = Layer.succeed(
    this,
    this.of({
      name: "plain",
      upgrade: (stream, _role, opening) =>
        stream.write([opening.preamble]).pipe(Effect.zipRight(opening.remotePreamble(true)), Effect.as(stream))
    })
  )
}
