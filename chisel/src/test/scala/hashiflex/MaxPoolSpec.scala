package hashiflex

import chisel3._
import chisel3.simulator.EphemeralSimulator._
import chisel3.util._
import org.scalatest.freespec.AnyFreeSpec
import org.scalatest.matchers.should.Matchers

import scala.util.Random

/** A max pool (line buffer + comparator trees) on its own, against a direct maximum in Scala. */
class MaxPoolHarness(val s: MaxPoolSpec, val in: NumFmt, levels: Int) extends Module {
  val x = IO(Flipped(Decoupled(Vec(s.inShape.c, UInt(in.width.W)))))
  val y = IO(Decoupled(Vec(s.outShape.c, UInt(in.width.W))))
  private val m = Module(new MaxPool(s.params(in, levels)))
  m.in <> WindowGen(s.window(in), x, scala.collection.mutable.HashMap.empty, "window")
  y <> m.out
}

class MaxPoolSpecTest extends AnyFreeSpec with Matchers {
  private def spec(c: Int, h: Int, w: Int, k: Int, stride: Int, pad: Padding, in: NumFmt): MaxPoolSpec = {
    val (oh, ow) = pad.outHW(h, w, k, stride)
    val b = Bounds(in.lo, in.hi)
    MaxPoolSpec(Common("pool", "input", Shape(c, h, w), Shape(c, oh, ow), b, b, in, 0, 1, 1), k, stride, pad)
  }
  /** The maximum over the window's pixels inside the image (padding never wins). */
  private def model(s: MaxPoolSpec, img: Seq[Seq[Seq[Int]]]): Seq[Seq[BigInt]] =
    for (oy <- 0 until s.outShape.h; ox <- 0 until s.outShape.w) yield (0 until s.inShape.c).map { c =>
      val px = for (i <- 0 until s.kernel; j <- 0 until s.kernel;
                    r = oy * s.stride - s.padding.top + i; q = ox * s.stride - s.padding.left + j
                    if r >= 0 && r < s.inShape.h && q >= 0 && q < s.inShape.w) yield img(c)(r)(q)
      BigInt(px.max)
    }

  private def check(s: MaxPoolSpec, in: NumFmt, levels: Int, seed: Int, stallEvery: Int): Unit = {
    val rnd = new Random(seed)
    val imgs = Seq.fill(3)(Seq.fill(s.inShape.c, s.inShape.h, s.inShape.w)(rnd.between(in.lo.toInt, in.hi.toInt + 1)))
    val expected = imgs.flatMap(model(s, _))
    val beats = imgs.flatMap(img => for (r <- 0 until s.inShape.h; q <- 0 until s.inShape.w) yield
      (0 until s.inShape.c).map(c => BigInt(img(c)(r)(q)) & ((BigInt(1) << in.width) - 1)))
    simulate(new MaxPoolHarness(s, in, levels)) { dut =>
      dut.reset.poke(true.B); dut.clock.step(2); dut.reset.poke(false.B)
      StreamDriver.run(dut.clock, dut.x, dut.y, beats, expected.length, in, stallEvery) shouldBe expected
    }
  }

  "a 3x3 stride-2 max pool padded on every side takes the maximum of the pixels inside the image" in {
    // signed input: zero padding would win over negative pixels, the format's smallest value never does
    val in = NumFmt(5, signed = true)
    check(spec(2, 7, 6, 3, 2, Padding.all(1), in), in, levels = 2, seed = 1, stallEvery = 0)
  }
  "an asymmetrically padded max pool (torch's ceil mode) with back-pressure" in {
    val in = NumFmt(4, signed = false)
    check(spec(3, 8, 8, 3, 2, Padding(1, 2, 1, 2), in), in, levels = 1, seed = 2, stallEvery = 3)
  }
  "a 2x2 stride-2 max pool registers its inputs, then its two comparator levels once at 4 levels per stage" in {
    val in = NumFmt(6, signed = true)
    val s = spec(2, 6, 4, 2, 2, Padding.all(0), in)
    s.params(in, 4).schedule.stages shouldBe 2
    s.params(in, 1).schedule.stages shouldBe 3
    s.params(in, 4).comparators shouldBe 2 * 3
    check(s, in, levels = 4, seed = 3, stallEvery = 2)
  }
  "design.json: padding as wide as the kernel is refused, naming the field" in {
    val text =
      """{"format":"hashiflex.design","version":1,"name":"mp",
        | "input":{"shape":[1,4,4],"bits":3,"signed":true,"exp":0,"parallelism":1},
        | "hardware":{"adder_levels_per_stage":2,"ii_cycles_per_image":16},
        | "layers":[
        |  {"name":"pool","src":"input","op":"max_pool2d","in_shape":[1,4,4],"out_shape":[1,2,2],"kernel":2,"stride":2,
        |   "padding":[0,2,0,0],"in_bounds":[-4,3],"out_bounds":[-4,3],"out_width":3,"out_signed":true,"out_exp":0,
        |   "parallelism":1}],
        | "output":{"features":4,"exp":0,"bounds":[-4,3],"width":3,"signed":true}}""".stripMargin
    val e = intercept[DesignError](Pipeline.plan(Design.parse(text)))
    e.getMessage should include("design.layers[0].padding: expected less than the kernel 2 on every side")
    val ok = text.replace("\"padding\":[0,2,0,0]", "\"padding\":0")
    Pipeline.plan(Design.parse(ok)).map(_.comparators) shouldBe Seq(3)
    val bad = ok.replace("\"out_bounds\":[-4,3]", "\"out_bounds\":[-4,2]").replace("\"bounds\":[-4,3]", "\"bounds\":[-4,2]")
    intercept[DesignError](Pipeline.plan(Design.parse(bad))).getMessage should include("design.layers[0].out_bounds: expected [-4, 3] (the in_bounds)")
  }
}
