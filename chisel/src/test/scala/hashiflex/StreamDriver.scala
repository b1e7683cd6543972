package hashiflex

import chisel3._
import chisel3.simulator.EphemeralSimulator._
import chisel3.util._

/** Drives a ready/valid stream module in ChiselSim: `beats` into `x` as fast as it takes them, `y` taken every
  * cycle except each `stallEvery`-th (0: never stalls), until `outputs` beats came out (decoded as `out`). */
object StreamDriver {
  def run(clock: Clock, x: DecoupledIO[Vec[UInt]], y: DecoupledIO[Vec[UInt]], beats: Seq[Seq[BigInt]], outputs: Int,
          out: NumFmt, stallEvery: Int, maxCycles: Int = 20000): Seq[Seq[BigInt]] = {
    var sent = 0
    val got = scala.collection.mutable.ArrayBuffer.empty[Seq[BigInt]]
    var cycle = 0
    while (got.length < outputs && cycle < maxCycles) {
      x.valid.poke((sent < beats.length).B)
      if (sent < beats.length) beats(sent).zipWithIndex.foreach { case (v, c) => x.bits(c).poke(v.U) }
      val ready = stallEvery == 0 || cycle % stallEvery != 0
      y.ready.poke(ready.B)
      if (sent < beats.length && x.ready.peek().litToBoolean) sent += 1
      if (ready && y.valid.peek().litToBoolean)
        got += y.bits.map { b =>
          val raw = b.peek().litValue
          if (out.signed && raw.testBit(out.width - 1)) raw - (BigInt(1) << out.width) else raw
        }
      clock.step()
      cycle += 1
    }
    got.toSeq
  }
}
