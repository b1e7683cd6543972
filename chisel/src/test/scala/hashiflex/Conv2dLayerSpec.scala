package hashiflex

import chisel3._
import chisel3.simulator.EphemeralSimulator._
import chisel3.util._
import org.scalatest.freespec.AnyFreeSpec
import org.scalatest.matchers.should.Matchers

import scala.util.Random

/** A conv layer (line buffer + shift-add trees) on its own, against a direct integer convolution in Scala. */
class Conv2dHarness(val s: Conv2dSpec, val in: NumFmt) extends Module {
  val x = IO(Flipped(Decoupled(Vec(s.inShape.c, UInt(in.width.W)))))
  val y = IO(Decoupled(Vec(s.outShape.c, UInt(s.outFmt.width.W))))
  y <> Conv2dLayer(s, in, levelsPerStage = 2, x, scala.collection.mutable.HashMap.empty)
}

object ConvModel {
  /** Exact reference: y[o][oy][ox] = sum_c,i,j x[c][oy*s-top+i][ox*s-left+j] * w[o][c][i][j] + b[o], w = sign*2^(|code|-1). */
  def conv(s: Conv2dSpec, img: Seq[Seq[Seq[Int]]]): Seq[Seq[BigInt]] = {
    val k = s.kernel
    for (oy <- 0 until s.outShape.h; ox <- 0 until s.outShape.w) yield
      (0 until s.outShape.c).map { o =>
        var acc = s.bias(o)
        for (c <- 0 until s.inShape.c; i <- 0 until k; j <- 0 until k) {
          val (r, q) = (oy * s.stride - s.padding.top + i, ox * s.stride - s.padding.left + j)
          val code = s.weights.codes(((o * s.inShape.c + c) * k + i) * k + j)
          if (r >= 0 && r < s.inShape.h && q >= 0 && q < s.inShape.w && code != 0)
            acc += BigInt(img(c)(r)(q)) * (BigInt(1) << (math.abs(code) - 1)) * code.sign
        }
        acc
      }
  }

  def randomSpec(rnd: Random, c: Int, o: Int, h: Int, w: Int, k: Int, stride: Int, pad: Padding, in: NumFmt): Conv2dSpec = {
    val bits = 4
    val codes = IndexedSeq.fill(o * c * k * k)(if (rnd.nextDouble() < 0.3) 0 else rnd.between(-7, 8))
    val bias = IndexedSeq.fill(o)(BigInt(rnd.between(-50, 50)))
    val inB = Bounds(in.lo, in.hi)
    val (oh, ow) = pad.outHW(h, w, k, stride)
    val shape = Shape(o, oh, ow)
    val chans = (0 until o).map(i => (Term.slots(codes.slice(i * c * k * k, (i + 1) * c * k * k)), bias(i)))
    val value = ShiftAddLayerParams("probe", c * k * k, in, inB, chans, NumFmt(8, signed = true), inB, 1).value
    Conv2dSpec(Common("conv", "input", Shape(c, h, w), shape, inB, value, NumFmt.forBounds(value), 0, 1, 1),
      k, stride, pad, 1, Po2Weights(bits, 0, 1, codes), bias, None)
  }
}

class Conv2dLayerSpec extends AnyFreeSpec with Matchers {
  private def check(s: Conv2dSpec, in: NumFmt, images: Int, seed: Int, stallEvery: Int): Unit = {
    val rnd = new Random(seed)
    val imgs = Seq.fill(images)(Seq.fill(s.inShape.c, s.inShape.h, s.inShape.w)(rnd.between(in.lo.toInt, in.hi.toInt + 1)))
    val expected = imgs.flatMap(ConvModel.conv(s, _))
    val beats = imgs.flatMap(img => for (r <- 0 until s.inShape.h; q <- 0 until s.inShape.w) yield
      (0 until s.inShape.c).map(c => BigInt(img(c)(r)(q)) & ((BigInt(1) << in.width) - 1)))
    simulate(new Conv2dHarness(s, in)) { dut =>
      dut.reset.poke(true.B); dut.clock.step(2); dut.reset.poke(false.B)
      StreamDriver.run(dut.clock, dut.x, dut.y, beats, expected.length, s.outFmt, stallEvery) shouldBe expected
    }
  }

  "a 3x3 stride-1 padded conv streams windows and sums shifted terms exactly" in {
    val in = NumFmt(4, signed = false)
    check(ConvModel.randomSpec(new Random(1), 2, 3, 5, 6, 3, 1, Padding.all(1), in), in, images = 3, seed = 11, stallEvery = 0)
  }
  "a 3x3 stride-2 conv with back-pressure on the output" in {
    val in = NumFmt(5, signed = true)
    check(ConvModel.randomSpec(new Random(2), 3, 4, 7, 6, 3, 2, Padding.all(1), in), in, images = 3, seed = 12, stallEvery = 3)
  }
  "a 3x3 stride-2 conv with TF 'SAME' padding (one row below, one column right) on an even input" in {
    val in = NumFmt(4, signed = true)
    val s = ConvModel.randomSpec(new Random(4), 2, 3, 6, 8, 3, 2, Padding(0, 1, 0, 1), in)
    s.outShape shouldBe Shape(3, 3, 4)
    check(s, in, images = 3, seed = 14, stallEvery = 4)
  }
  "a 3x3 conv padded only above and left, by different amounts" in {
    val in = NumFmt(3, signed = false)
    check(ConvModel.randomSpec(new Random(5), 2, 2, 5, 6, 3, 1, Padding(2, 0, 1, 0), in), in, images = 2, seed = 15,
      stallEvery = 0)
  }
  "a 1x1 stride-2 conv skips rows it never needs" in {
    val in = NumFmt(3, signed = false)
    check(ConvModel.randomSpec(new Random(3), 2, 2, 6, 5, 1, 2, Padding.all(0), in), in, images = 2, seed = 13, stallEvery = 2)
  }
}
