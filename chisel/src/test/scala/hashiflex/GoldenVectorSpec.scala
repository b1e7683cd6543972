package hashiflex

import chisel3._
import chisel3.simulator.EphemeralSimulator._
import org.scalatest.freespec.AnyFreeSpec
import org.scalatest.matchers.should.Matchers

/** Whole pipelines against the Python golden model: `make vectors` writes small designs covering every layer
  * type and the unroll (hashiflex/vectors.py) with input beats and the output beats the golden model computes;
  * each is elaborated here and streamed, first freely (the cycles per image must equal the design's II), then
  * with back-pressure on the output (the values must not change).
  */
class GoldenVectorSpec extends AnyFreeSpec with Matchers {
  private val root = os.Path(sys.props.getOrElse("hashiflex.vectors", (os.pwd / "build" / "vectors").toString))
  private val cases =
    if (os.isDir(root)) os.list(root).filter(d => os.isFile(d / "vectors.json")).sorted else Seq.empty

  "golden vectors exist (run `make vectors`)" in {
    withClue(s"no vectors under $root: ") { cases should not be empty }
  }

  for (dir <- cases) s"${dir.last}: RTL == golden model, bit for bit, at the design's II" in {
    val d = Design.load(dir / "design.json")
    val v = ujson.read(os.read(dir / "vectors.json"))
    val in = v("in_beats").arr.map(_.arr.map(x => BigInt(x.num.toLong)).toIndexedSeq).toIndexedSeq
    val want = v("out_beats").arr.map(_.arr.map(x => BigInt(x.num.toLong)).toIndexedSeq).toIndexedSeq
    val images = v("images").num.toInt
    val perImage = want.length / images
    simulate(new Pipeline(d)) { dut =>
      def run(stall: Int => Boolean): (Seq[IndexedSeq[BigInt]], Seq[Int]) = {
        dut.reset.poke(true.B); dut.clock.step(2); dut.reset.poke(false.B)
        var sent = 0
        var cycle = 0
        val got = scala.collection.mutable.ArrayBuffer.empty[IndexedSeq[BigInt]]
        val done = scala.collection.mutable.ArrayBuffer.empty[Int]
        while (got.length < want.length && cycle < 100000) {
          dut.in.valid.poke((sent < in.length).B)
          if (sent < in.length) in(sent).zipWithIndex.foreach { case (x, i) => dut.in.bits(i).poke(x.U) }
          val ready = !stall(cycle)
          dut.out.ready.poke(ready.B)
          if (sent < in.length && dut.in.ready.peek().litToBoolean) sent += 1
          if (ready && dut.out.valid.peek().litToBoolean) {
            got += want.head.indices.map(i => dut.out.bits(i).peek().litValue)
            if (got.length % perImage == 0) done += cycle
          }
          dut.clock.step()
          cycle += 1
        }
        (got.toSeq, done.toSeq)
      }
      val (free, done) = run(_ => false)
      free shouldBe want
      done.sliding(2).map { case Seq(a, b) => b - a }.toSeq.distinct shouldBe Seq(d.iiCycles)
      val (stalled, _) = run(c => c % 3 == 1 || c % 7 == 0)
      stalled shouldBe want
    }
  }
}
