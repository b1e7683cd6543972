package hashiflex

import org.scalatest.freespec.AnyFreeSpec
import org.scalatest.matchers.should.Matchers

/** design.json reading: every malformed file is refused with the field's path and the expectation. */
class DesignReadSpec extends AnyFreeSpec with Matchers {
  private val good =
    """{"format":"hashiflex.design","version":1,"name":"tiny",
      | "input":{"shape":[1,3,3],"bits":2,"signed":false,"exp":0,"parallelism":1},
      | "hardware":{"adder_levels_per_stage":2,"ii_cycles_per_image":9},
      | "layers":[
      |  {"name":"conv","src":"input","op":"conv2d","groups":1,"in_shape":[1,3,3],"out_shape":[1,3,3],"kernel":1,"stride":1,"padding":0,
      |   "in_bounds":[0,3],"out_bounds":[1,7],"out_width":3,"out_signed":false,"out_exp":0,"parallelism":1,
      |   "weights":{"bits":3,"e_min":0,"terms":1,"shape":[1,1,1,1],"codes":[2]},"bias":[1],
      |   "adders":{"sums":[],"roots":[0,1,0]}},
      |  {"name":"pool","src":"conv","op":"sum_pool","in_shape":[1,3,3],"out_shape":[1,1,1],"in_bounds":[1,7],
      |   "out_bounds":[9,63],"out_width":6,"out_signed":false,"out_exp":0,"parallelism":1}],
      | "output":{"features":1,"exp":0,"bounds":[9,63],"width":6,"signed":false}}""".stripMargin

  private def broken(from: String, to: String): String = {
    good should include(from)
    good.replace(from, to)
  }
  private def error(text: String): String = {
    val e = intercept[DesignError](Pipeline.plan(Design.parse(text)))
    e.getMessage
  }

  "a well-formed design parses and plans" in {
    val d = Design.parse(good)
    d.layers.map(_.op) shouldBe Seq("conv2d", "sum_pool")
    Pipeline.plan(d).map(_.adders) shouldBe Seq(1, 1)
  }
  "an unknown op names the field and the choices" in {
    error(broken("\"op\":\"sum_pool\"", "\"op\":\"max_pool\"")) should (include("design.layers[1].op") and include("sum_pool"))
  }
  "graph and unroll errors name the field" in {
    error(broken("\"groups\":1", "\"groups\":2")) should include("design.layers[0].groups: expected 1 or 1 (depthwise")
    error(broken("\"src\":\"conv\"", "\"src\":\"nope\"")) should include("design.layers[1].src: expected \"input\" or an earlier layer's name, found \"nope\"")
    error(broken("\"exp\":0,\"parallelism\":1", "\"exp\":0,\"parallelism\":2")) should include("design.input.parallelism: expected a divisor of the width 3, or a whole number of rows dividing the height 3")
    error(broken("\"out_exp\":0,\"parallelism\":1,", "\"out_exp\":0,\"parallelism\":3,")) should
      include("design.layers[0].parallelism: expected 1 (the parallelism of \"input\"; a 1x1 conv maps pixels one to one)")
    error(broken("\"ii_cycles_per_image\":9", "\"ii_cycles_per_image\":8")) should include("design.hardware.ii_cycles_per_image: expected 9")
  }
  "a layer's own adder levels per stage are read, and refused on a layer without a tree" in {
    val two = Design.parse(broken("\"out_exp\":0,\"parallelism\":1,\n", "\"out_exp\":0,\"parallelism\":1,\"levels_per_stage\":5,\n"))
    two.layers.head.c.levels shouldBe Some(5)
    error(broken("\"out_bounds\":[9,63],\"out_width\":6,\"out_signed\":false,\"out_exp\":0,\"parallelism\":1}",
      "\"out_bounds\":[9,63],\"out_width\":6,\"out_signed\":false,\"out_exp\":0,\"parallelism\":1,\"levels_per_stage\":2}")) should
      include("design.layers[1].levels_per_stage: layer \"pool\" (sum_pool) has no adder or comparator tree to pipeline")
    error(broken("\"out_exp\":0,\"parallelism\":1,\n", "\"out_exp\":0,\"parallelism\":1,\"levels_per_stage\":0,\n")) should
      include("design.layers[0].levels_per_stage: expected an integer in [1, 64], found 0")
  }
  "beats of whole rows: any number of rows that divides the height, up to the whole image" in {
    val rows = good.replace("\"exp\":0,\"parallelism\":1}", "\"exp\":0,\"parallelism\":9}")
      .replace("\"out_exp\":0,\"parallelism\":1,\n", "\"out_exp\":0,\"parallelism\":9,\n")
      .replace("\"ii_cycles_per_image\":9", "\"ii_cycles_per_image\":1")
    val d = Design.parse(rows)
    (d.input.par, d.layers.head.par, d.iiCycles) shouldBe ((9, 9, 1))
    error(rows.replace("\"exp\":0,\"parallelism\":9}", "\"exp\":0,\"parallelism\":6}")) should
      include("design.input.parallelism: expected a divisor of the width 3, or a whole number of rows dividing the height 3 (a multiple of 3): a beat never straddles rows, found 6")
  }
  "input bounds narrower than the format are the first layer's in_bounds; outside the format they are refused" in {
    val narrow = good.replace("\"exp\":0,\"parallelism\":1}", "\"exp\":0,\"parallelism\":1,\"bounds\":[0,2]}")
    error(narrow) should include("design.layers[0].in_bounds: expected [0, 2] (the out_bounds of \"input\"), found [0,3]")
    error(good.replace("\"exp\":0,\"parallelism\":1}", "\"exp\":0,\"parallelism\":1,\"bounds\":[0,4]}")) should
      include("design.input.bounds: expected [lo, hi] within [0, 3] (the input format's range), found [0,4]")
  }
  "a missing field is named" in {
    error(broken("\"kernel\":1,", "")) should include("design.layers[0].kernel: required field is missing")
  }
  "a code count that does not match the shape is refused" in {
    error(broken("\"codes\":[2]", "\"codes\":[2,1]")) should include("design.layers[0].weights.codes: expected 1 entries, found 2")
  }
  "a code outside the weight bits is refused" in {
    error(broken("\"codes\":[2]", "\"codes\":[4]")) should include("design.layers[0].weights.codes[0]: expected an integer in [-3, 3]")
  }
  "multi-term weights: each weight is the sum of its terms, and the bounds are the exact ones" in {
    // w = 2**1 - 2**0 = 1 on x in [0, 3], bias 1: exactly [1, 4] (interval arithmetic on the terms gives [-2, 7])
    val two = good.replace("\"terms\":1,\"shape\":[1,1,1,1],\"codes\":[2]", "\"terms\":2,\"shape\":[1,1,1,1],\"codes\":[2,-1]")
      .replace("\"sums\":[],\"roots\":[0,1,0]", "\"sums\":[0,1,0,0,1],\"roots\":[1,0,0]") // (x << 1) - x
      .replace("\"out_bounds\":[1,7],\"out_width\":3", "\"out_bounds\":[1,4],\"out_width\":3")
      .replace("\"in_bounds\":[1,7],", "\"in_bounds\":[1,4],").replace("[9,63],\"out_width\":6", "[9,36],\"out_width\":6")
      .replace("\"bounds\":[9,63]", "\"bounds\":[9,36]")
    val d = Design.parse(two)
    d.layers.head.asInstanceOf[Conv2dSpec].weights.slots(0, 1) shouldBe IndexedSeq(Some(Term(0, 1, false)), Some(Term(0, 0, true)))
    Pipeline.plan(d).map(_.adders) shouldBe Seq(2, 1) // x<<1 - x, then + bias
    // the balanced trees of layers built without a plan: three terms fill four slots per tap, so pairs never
    // straddle two taps
    Po2Weights(3, 0, 3, IndexedSeq(2, -3, 1, 0, -1, 2)).slots(0, 2) shouldBe
      IndexedSeq(Some(Term(0, 1, false)), Some(Term(0, 0, false)), Some(Term(0, 0, true)), None,
        Some(Term(1, 2, true)), None, Some(Term(1, 1, false)), None)
    error(two.replace("[1,4]", "[1,5]").replace("[9,36]", "[9,45]")) should include("design.layers[0].out_bounds: expected [1, 4]")
    error(two.replace("\"codes\":[2,-1]", "\"codes\":[2]")) should include("design.layers[0].weights.codes: expected 2 entries, found 1")
    error(two.replace("\"terms\":2", "\"terms\":5")) should include("design.layers[0].weights.terms: expected an integer in [1, 4]")
  }
  "asymmetric (TF 'SAME') padding is [top, bottom, left, right]; a bad one names the field" in {
    val padded = good.replace("\"padding\":0", "\"padding\":[1,0,0,1]")
      .replace("\"in_shape\":[1,3,3],\"out_shape\":[1,3,3]", "\"in_shape\":[1,3,3],\"out_shape\":[1,4,4]")
      .replace("\"in_shape\":[1,3,3],\"out_shape\":[1,1,1]", "\"in_shape\":[1,4,4],\"out_shape\":[1,1,1]")
      .replace("\"out_bounds\":[9,63],\"out_width\":6", "\"out_bounds\":[16,112],\"out_width\":7")
      .replace("\"bounds\":[9,63],\"width\":6", "\"bounds\":[16,112],\"width\":7")
      .replace("\"ii_cycles_per_image\":9", "\"ii_cycles_per_image\":16")
    val d = Design.parse(padded)
    val conv = d.layers.head.asInstanceOf[Conv2dSpec]
    conv.padding shouldBe Padding(1, 0, 0, 1)
    conv.pointwise shouldBe false // the padded border needs the line buffer
    Pipeline.plan(d).map(_.adders) shouldBe Seq(1, 1)
    val e = intercept[DesignError](Pipeline.plan(Design.parse(padded.replace("\"out_shape\":[1,4,4]", "\"out_shape\":[1,3,3]"))))
    e.getMessage should include("design.layers[0].out_shape: expected [1, 4, 4], found [1, 3, 3]")
    error(padded.replace("[1,0,0,1]", "[1,0,0]")) should include("design.layers[0].padding: expected 4 entries, found 3")
    error(padded.replace("[1,0,0,1]", "[1,0,0,9]")) should include("design.layers[0].padding[3]: expected an integer in [0, 7], found 9")
  }
  "the adder plan must compute the weights: each output expands to its weights' terms" in {
    error(broken("\"roots\":[0,1,0]", "\"roots\":[0,0,0]")) should
      include("design.layers[0].adders: output channel 0 computes 1 x input 0, but its weights give 2 (the plan does not compute the weights)")
    error(broken("\"sums\":[],\"roots\":[0,1,0]", "\"sums\":[0,0,0,1,0],\"roots\":[1,0,0]")) should
      include("design.layers[0].adders: output channel 0 computes 3 x input 0, but its weights give 2")
    // x + x = x << 1 is a valid (if wasteful) plan: the check is on what it computes, not on its shape
    Pipeline.plan(Design.parse(broken("\"sums\":[],\"roots\":[0,1,0]", "\"sums\":[0,0,0,0,0],\"roots\":[1,0,0]"))).map(_.adders) shouldBe Seq(2, 1)
  }
  "a malformed adder plan names the field" in {
    error(broken("\"sums\":[]", "\"sums\":[1,0,0,0,0]")) should
      include("design.layers[0].adders.sums[0] (sum 0's first operand: an input or an earlier sum): expected an integer in [0, 0], found 1")
    error(broken("\"sums\":[]", "\"sums\":[0,0,0,0,2]")) should include("design.layers[0].adders.sums[4] (sum 0's sign: 0 add, 1 subtract)")
    error(broken("\"sums\":[]", "\"sums\":[0,0,0]")) should include("design.layers[0].adders.sums: expected 5 integers per sum")
    error(broken("\"roots\":[0,1,0]", "\"roots\":[0,1]")) should include("design.layers[0].adders.roots: expected 3 entries, found 2")
    error(broken("\"roots\":[0,1,0]", "\"roots\":[5,1,0]")) should include("design.layers[0].adders.roots[0] (output 0's root: -1, an input or a sum): expected an integer in [-1, 0], found 5")
    error(broken(",\n   \"adders\":{\"sums\":[],\"roots\":[0,1,0]}", "")) should include("design.layers[0].adders: required field is missing")
  }
  "out_bounds that the weights do not give are refused" in {
    val msg = error(broken("\"out_bounds\":[9,63],\"out_width\":6", "\"out_bounds\":[9,64],\"out_width\":7"))
    msg should (include("design.layers[1].out_bounds: expected [9, 63]") and include("found [9, 64]"))
  }
  "a width that does not follow the bounds is refused" in {
    error(broken("\"out_width\":3", "\"out_width\":5")) should include("design.layers[0].out_width: expected 3")
  }
  "shapes must chain" in {
    error(broken("\"in_shape\":[1,3,3],\"out_shape\":[1,1,1]", "\"in_shape\":[2,3,3],\"out_shape\":[1,1,1]")) should
      include("design.layers[1].in_shape: expected [1, 3, 3]")
  }
  "a wrong format version is refused" in {
    error(broken("\"version\":1", "\"version\":2")) should include("design.version: expected 1, found 2")
  }
  "invalid JSON is refused" in {
    error("{\"format\":") should include("not valid JSON")
  }
  "the command line refuses missing arguments" in {
    Main.parseArgs(Seq("--design", "x.json")) shouldBe Left("missing --out DIR")
    Main.parseArgs(Seq()) shouldBe Left("missing --design FILE")
    Main.parseArgs(Seq("--design", "a.json", "--out", "a", "--design", "b.json", "--out", "b"), os.root).map(_.length) shouldBe Right(2)
    Main.parseArgs(Seq("--bogus")).isLeft shouldBe true
  }

  private val withNpu = good.replace("\"output\":{\"features\":1,\"exp\":0,\"bounds\":[9,63],\"width\":6,\"signed\":false}",
    """"npu":{"in_features":1,"in_bounds":[9,63],"in_width":6,"in_signed":false,"capacity":3,"lanes":1,"width":1,
      |"weight_bits":4,"bias_bits":8,"acc_width":11,"out_bits":8,"max_shift":10,"top_k":1,"scan":1,"cycles_per_image":7,
      |"head":{"out_features":3,"w_exp":0,"shift":0,"tag":1,"weights":[1,2,3],"bias":[0,0,0]}},
      |"output":{"features":3,"exp":0,"bounds":[-128,127],"width":8,"signed":true}""".stripMargin)
  private def npuError(from: String, to: String): String = {
    withNpu should include(from)
    error(withNpu.replace(from, to))
  }

  "an npu section parses into the NPU's parameters" in {
    val n = Design.parse(withNpu).npu.get
    (n.inFeatures, n.capacity, n.accWidth, n.schedule, n.cyclesPerImage) shouldBe ((1, 3, 11, 3, 7))
  }
  "npu fields that do not follow from the backbone or each other are refused with their path" in {
    npuError("\"acc_width\":11", "\"acc_width\":12") should include("design.npu.acc_width: expected 11")
    npuError("\"in_features\":1", "\"in_features\":2") should include("design.npu.in_features: expected 1 (the vector of \"pool\"")
    npuError("\"in_bounds\":[9,63]", "\"in_bounds\":[0,63]") should include("design.npu.in_bounds: expected [9, 63]")
    npuError("\"cycles_per_image\":7", "\"cycles_per_image\":3") should include("design.npu.cycles_per_image: expected 7")
    npuError("\"lanes\":1", "\"lanes\":4") should include("design.npu.lanes: expected an integer in [1, 3]")
    npuError("\"features\":3", "\"features\":1") should include("design.output.features: expected 3 (the NPU's capacity)")
    npuError("\"max_shift\":10", "\"max_shift\":9") should include("design.npu.max_shift: expected 10")
  }
  "the module table lists every module under its Verilog name, the NPU, its loader and its weight memory too" in {
    val dotted = withNpu.replace("\"name\":\"conv\"", "\"name\":\"f.0.conv\"").replace("\"src\":\"conv\"", "\"src\":\"f.0.conv\"")
    dotted should include("f.0.conv")
    val d = Design.parse(dotted)
    val out = os.temp.dir() / "rtl"
    val params = Main.elaborate(d, out)
    val verilog = os.read(out / s"Hashiflex_${d.name}.sv")
    val rows = params("modules").arr.map(_.obj)
    for (r <- rows) verilog should include(s"module ${r("name").str}(")
    val layer = rows.map(_("name").str).filter(_.startsWith("ShiftAddLayer_"))
    layer should have size 1
    layer.head should startWith("ShiftAddLayer_f0conv_n1_o1_p1_")
    val kinds = rows.map(r => r("kind").str -> r).toMap
    kinds.keySet should contain allOf ("npu", "npu_loader", "memory")
    val n = d.npu.get
    (kinds("memory")("depth").num, kinds("memory")("width").num) shouldBe ((2.0 * n.schedule, 1.0 * n.macs * n.weightBits))
    kinds("npu")("name").str shouldBe n.moduleName
    kinds("memory")("name").str should startWith("NpuWeightMemory_")
    ModuleTable.legalName("Requant_features.1.conv.0_c3") shouldBe "Requant_features1conv0_c3"
  }
  "the NPU's cycles count in the design's II" in {
    val slow = withNpu.replace("\"capacity\":3", "\"capacity\":12").replace("\"cycles_per_image\":7", "\"cycles_per_image\":16")
      .replace("\"features\":3", "\"features\":12")
    error(slow) should include("design.hardware.ii_cycles_per_image: expected 16")
  }
}
